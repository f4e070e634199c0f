"""Whole CT series: safe ZIP extraction, grouping by study and series, geometric ordering.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected
on the cross product of the ImageOrientationPatient direction cosines), never by file name.
Objects that are not axial image slices (localisers, reports, other modalities) are skipped
with a reason the caller can show.
"""

from __future__ import annotations

import io
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from ml.data.imaging import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    UnsupportedImageError,
    dicom_dataset_to_image,
    read_dicom,
    sniff_format,
)
from ml.data.windowing import BRAIN_WINDOW, Window

__all__ = [
    "ArchiveError",
    "ArchiveLimits",
    "ArchiveTooLarge",
    "SeriesError",
    "SeriesSlice",
    "SkippedObject",
    "StudySeries",
    "assemble_series",
    "extract_zip",
    "is_zip",
    "slice_positions",
]


class ArchiveError(ValueError):
    """A ZIP archive that is damaged or breaks the safety limits."""


class ArchiveTooLarge(ArchiveError):
    """A ZIP archive with more entries or more uncompressed bytes than the limits allow."""


class SeriesError(ValueError):
    """No usable CT series among the uploaded objects."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 2000
    max_total_bytes: int = 1024 * 1024 * 1024
    max_ratio: float = 100.0


@dataclass
class SeriesSlice:
    """One slice of a series, decoded, with its place in it."""

    name: str
    image: DecodedImage
    sop_instance_uid: str | None
    position_mm: float | None
    instance_number: int | None


@dataclass(frozen=True)
class SkippedObject:
    name: str
    reason: str


@dataclass
class StudySeries:
    """The chosen series of one study, ordered along the slice normal."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    slices: list[SeriesSlice]
    skipped: list[SkippedObject] = field(default_factory=list)
    ordering: str = "position"
    other_series: list[str] = field(default_factory=list)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.slices[0].image.metadata if self.slices else {}


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def extract_zip(data: bytes, limits: ArchiveLimits | None = None) -> list[tuple[str, bytes]]:
    """Files of a ZIP archive, in memory, refusing unsafe archives.

    Refused: entry names that are absolute or climb out with ``..``, more than
    ``max_entries`` entries, more than ``max_total_bytes`` uncompressed, or an entry whose
    compression ratio exceeds ``max_ratio`` (a ZIP bomb). Nothing is written to disk.
    """
    limits = limits or ArchiveLimits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = [entry for entry in archive.infolist() if not entry.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"The ZIP archive is damaged: {exc}") from exc
    if len(entries) > limits.max_entries:
        raise ArchiveTooLarge(f"The ZIP archive has {len(entries)} files; the limit is {limits.max_entries}.")
    declared = sum(entry.file_size for entry in entries)
    if declared > limits.max_total_bytes:
        raise ArchiveTooLarge(
            f"The ZIP archive unpacks to {declared / 1024 / 1024:.0f} MiB; the limit is "
            f"{limits.max_total_bytes / 1024 / 1024:.0f} MiB."
        )
    files = []
    total = 0
    for entry in entries:
        path = PurePosixPath(entry.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise ArchiveError(
                f"The ZIP archive holds an unsafe path {entry.filename!r}; nothing was extracted."
            )
        if entry.compress_size and entry.file_size / entry.compress_size > limits.max_ratio:
            raise ArchiveError(
                f"The ZIP entry {entry.filename!r} is compressed {entry.file_size / entry.compress_size:.0f}:1, "
                "which looks like a ZIP bomb."
            )
        try:
            with archive.open(entry) as stream:
                # Read at most one byte past the declared size: a lying header cannot inflate more.
                content = stream.read(entry.file_size + 1)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise ArchiveError(f"The ZIP entry {entry.filename!r} could not be read: {exc}") from exc
        if len(content) > entry.file_size:
            raise ArchiveError(f"The ZIP entry {entry.filename!r} is larger than its header says.")
        total += len(content)
        if total > limits.max_total_bytes:
            raise ArchiveTooLarge("The ZIP archive unpacks to more than the size limit.")
        files.append((str(path), content))
    return files


def slice_positions(
    orientations: list[list[float] | None], positions: list[list[float] | None]
) -> list[float] | None:
    """Each slice's position along the series' slice normal, or ``None`` without geometry."""
    if any(value is None for value in orientations) or any(value is None for value in positions):
        return None
    orientation = np.asarray(orientations[0], dtype=np.float64)
    if orientation.size != 6:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    if np.linalg.norm(normal) < 1e-6:
        return None
    normal /= np.linalg.norm(normal)
    return [float(np.dot(np.asarray(position, dtype=np.float64), normal)) for position in positions]


def _skip_reason(dataset: Any) -> str | None:
    modality = str(dataset.get("Modality", "") or "").upper()
    if modality and modality != "CT":
        return f"modality {modality} is not CT"
    if "PixelData" not in dataset:
        return "no pixel data (not an image)"
    image_type = [str(value).upper() for value in (dataset.get("ImageType") or [])]
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        return "localiser (scout) image"
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        return "multi-frame object"
    return None


def assemble_series(
    files: Iterable[tuple[str, bytes]],
    window: Window = BRAIN_WINDOW,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_slices: int = 1000,
) -> StudySeries:
    """Parse uploaded DICOM objects and return the largest CT series, ordered.

    Raises:
        SeriesError: no usable CT slice was found (the message lists why each object was skipped).
        UnsupportedImageError: a compressed transfer syntax that cannot be decoded here.
    """
    skipped: list[SkippedObject] = []
    groups: dict[tuple[str, str], list[tuple[str, Any]]] = defaultdict(list)
    for name, data in files:
        if sniff_format(data) != "dicom":
            skipped.append(SkippedObject(name, "not a DICOM file"))
            continue
        try:
            dataset = read_dicom(data)
        except ImageDecodeError as exc:
            skipped.append(SkippedObject(name, str(exc)))
            continue
        reason = _skip_reason(dataset)
        if reason:
            skipped.append(SkippedObject(name, reason))
            continue
        key = (str(dataset.get("StudyInstanceUID", "")), str(dataset.get("SeriesInstanceUID", "")))
        groups[key].append((name, dataset))
    if not groups:
        details = "; ".join(f"{item.name}: {item.reason}" for item in skipped[:10])
        raise SeriesError(f"No CT image slices were found. {details}".strip())
    chosen_key = max(groups, key=lambda key: len(groups[key]))
    members = groups[chosen_key]
    if len(members) > max_slices:
        raise SeriesError(f"The series has {len(members)} slices; the limit is {max_slices}.")
    other_series = [series for (_study, series) in groups if (_study, series) != chosen_key]
    for key, others in groups.items():
        if key != chosen_key:
            skipped.extend(SkippedObject(name, "belongs to another series") for name, _ in others)

    slices: list[SeriesSlice] = []
    for name, dataset in members:
        try:
            image = dicom_dataset_to_image(dataset, window, max_pixels)
        except ImageDecodeError as exc:
            skipped.append(SkippedObject(name, str(exc)))
            continue
        except UnsupportedImageError:
            raise
        number = dataset.get("InstanceNumber")
        slices.append(
            SeriesSlice(
                name=name,
                image=image,
                sop_instance_uid=image.metadata.get("sop_instance_uid"),
                position_mm=None,
                instance_number=int(number) if number not in (None, "") else None,
            )
        )
    if not slices:
        raise SeriesError("No slice of the series could be decoded.")
    positions = slice_positions(
        [item.image.metadata.get("image_orientation") for item in slices],
        [item.image.metadata.get("image_position") for item in slices],
    )
    ordering = "position"
    if positions is not None:
        for item, position in zip(slices, positions, strict=True):
            item.position_mm = position
        slices.sort(key=lambda item: (item.position_mm, item.sop_instance_uid or ""))
    else:
        ordering = "instance_number"
        slices.sort(key=lambda item: (item.instance_number is None, item.instance_number or 0, item.name))
    return StudySeries(
        study_instance_uid=chosen_key[0] or None,
        series_instance_uid=chosen_key[1] or None,
        slices=slices,
        skipped=skipped,
        ordering=ordering,
        other_series=other_series,
    )
