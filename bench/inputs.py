"""The benchmark's inputs from the real datasets: one typical PNG slice and a DICOM series."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np

from ml.errors import MissingDataFile

__all__ = ["SERIES_SPACING_MM", "build_dicom_series", "pick_slice_png", "png_size"]

SERIES_SPACING_MM = 5.0


def pick_slice_png(data_dir: Path) -> Path:
    """The head_ct PNG of median pixel count: a typical slice, neither the smallest nor the largest."""
    paths = sorted((data_dir / "head_ct" / "images").glob("*.png"))
    if not paths:
        raise MissingDataFile(
            f"No head_ct PNGs under {data_dir / 'head_ct' / 'images'}; pass --data-dir or set ICH_DATA_DIR."
        )
    sizes = [width * height for width, height in map(png_size, paths)]
    order = np.argsort(sizes, kind="stable")
    return paths[int(order[len(order) // 2])]


def build_dicom_series(data_dir: Path, num_slices: int) -> list[bytes]:
    """``num_slices`` DICOM files that read as one axial series, from the RSNA slices re-used in turn.

    Each copy gets its own SOPInstanceUID and InstanceNumber, one shared study and series UID, and
    an ImagePositionPatient ``SERIES_SPACING_MM`` further along the slice normal than the last.
    """
    import pydicom
    import pydicom.config
    from pydicom.uid import generate_uid

    sources = sorted((data_dir / "rsna_dicom" / "dicom").glob("*.dcm"))
    if not sources:
        raise MissingDataFile(
            f"No DICOM files under {data_dir / 'rsna_dicom' / 'dicom'}; pass --data-dir or set ICH_DATA_DIR."
        )
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    settings = pydicom.config.settings
    previous_mode = settings.reading_validation_mode
    # The RSNA files carry non-conforming UIDs ("ID_..."); every one of them is replaced below.
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        templates = [pydicom.dcmread(path) for path in sources]
        for index in range(num_slices):
            dataset = copy.deepcopy(templates[index % len(templates)])
            instance_uid = generate_uid()
            dataset.SOPInstanceUID = instance_uid
            dataset.file_meta.MediaStorageSOPInstanceUID = instance_uid
            dataset.StudyInstanceUID = study_uid
            dataset.SeriesInstanceUID = series_uid
            dataset.InstanceNumber = index + 1
            dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            dataset.ImagePositionPatient = [-125.0, -125.0, SERIES_SPACING_MM * index]
            dataset.SliceThickness = SERIES_SPACING_MM
            dataset.PatientName = "Bench^Series"
            dataset.PatientID = "BENCH-0001"
            buffer = io.BytesIO()
            dataset.save_as(buffer)
            files.append(buffer.getvalue())
    finally:
        settings.reading_validation_mode = previous_mode
    return files


def png_size(path: Path) -> list[int]:
    """Width and height of a PNG, read from its header."""
    # The PNG header stores width and height as big-endian integers at bytes 16..24.
    header = path.read_bytes()[:24]
    return [int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")]
