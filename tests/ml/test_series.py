"""Series assembly: ZIP safety, grouping, skipping, geometric ordering, HU round trip."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.uid import generate_uid

from ml.data.series import ArchiveError, ArchiveLimits, SeriesError, assemble_series, extract_zip, is_zip
from tests.support.dicom_series import ct_slice, patient_jpegs, series_from_jpegs


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def series(data_dir: Path) -> list[tuple[str, bytes]]:
    return series_from_jpegs(patient_jpegs(data_dir, "071")[:12])


def test_slices_are_ordered_by_position_not_name(series: list[tuple[str, bytes]]) -> None:
    shuffled = series[:]
    random.Random(3).shuffle(shuffled)
    assembled = assemble_series(shuffled)
    assert assembled.ordering == "position"
    positions = [item.position_mm for item in assembled.slices]
    assert positions == sorted(positions)
    assert [item.instance_number for item in assembled.slices] == list(range(1, 13))


def test_windowed_series_gives_back_the_source_grey_levels(
    data_dir: Path, series: list[tuple[str, bytes]]
) -> None:
    assembled = assemble_series(series)
    source = cv2.imread(str(patient_jpegs(data_dir, "071")[0]), cv2.IMREAD_GRAYSCALE)
    first = assembled.slices[0].image
    assert np.abs(first.pixels.astype(int) - source.astype(int)).max() <= 1
    assert first.hounsfield is not None and first.hounsfield.min() == pytest.approx(-1000.0, abs=0.1)


def test_other_objects_are_skipped_with_reasons(series: list[tuple[str, bytes]]) -> None:
    grey = np.full((64, 64), 100, np.uint8)
    study = generate_uid()
    localiser = ct_slice(grey, 0.0, 1, study, generate_uid(), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    other_series = [("other.dcm", ct_slice(grey, 0.0, 1, study, generate_uid()))]
    extra = [("notes.txt", b"hello"), ("scout.dcm", localiser), *other_series]
    assembled = assemble_series(series + extra)
    reasons = {item.name: item.reason for item in assembled.skipped}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert "localiser" in reasons["scout.dcm"]
    assert reasons["other.dcm"] == "belongs to another series"
    assert len(assembled.slices) == len(series)


def test_no_usable_slice_is_an_error() -> None:
    with pytest.raises(SeriesError, match="No CT image slices"):
        assemble_series([("a.txt", b"text")])


def test_zip_round_trip(series: list[tuple[str, bytes]]) -> None:
    archive = zip_of(dict(series[:3]))
    assert is_zip(archive)
    files = extract_zip(archive)
    assert sorted(files) == sorted(series[:3])


@pytest.mark.parametrize("name", ["../evil.dcm", "/etc/passwd", "a/../../b.dcm", "C:/windows/x.dcm"])
def test_zip_with_unsafe_paths_is_refused(name: str) -> None:
    with pytest.raises(ArchiveError, match="unsafe path"):
        extract_zip(zip_of({name: b"x"}))


def test_zip_bomb_is_refused() -> None:
    with pytest.raises(ArchiveError, match="ZIP bomb"):
        extract_zip(zip_of({"zeros.dcm": bytes(5 * 1024 * 1024)}))


def test_zip_limits_on_entries_and_size() -> None:
    many = zip_of({f"{index}.dcm": b"x" for index in range(30)}, zipfile.ZIP_STORED)
    with pytest.raises(ArchiveError, match="30 files"):
        extract_zip(many, ArchiveLimits(max_entries=20))
    big = zip_of({"a.bin": bytes(2048)}, zipfile.ZIP_STORED)
    with pytest.raises(ArchiveError, match="unpacks to"):
        extract_zip(big, ArchiveLimits(max_total_bytes=1024))


def test_damaged_zip_is_refused() -> None:
    with pytest.raises(ArchiveError, match="damaged"):
        extract_zip(b"PK\x03\x04" + b"\x00" * 50)
