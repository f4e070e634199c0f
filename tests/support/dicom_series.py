"""Build real DICOM CT series at test time from CT-ICH brain-window JPEG slices.

Grey level ``g`` of the brain window (level 40, width 80) is turned back into Hounsfield units
``g / 255 * 80``; black becomes air (-1000 HU). Windowing the series again gives the JPEG's
grey levels back, so a series and its source slices must get the same predictions.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

RESCALE_SLOPE = 0.1
RESCALE_INTERCEPT = -1024.0


def grey_to_hounsfield(grey: np.ndarray) -> np.ndarray:
    hounsfield = grey.astype(np.float64) / 255.0 * 80.0
    return np.where(grey == 0, -1000.0, hounsfield)


def ct_slice(
    grey: np.ndarray,
    position_z: float,
    instance_number: int,
    study_uid: str,
    series_uid: str,
    patient_id: str = "SERIES-TEST",
    patient_name: str = "Series^Test",
    pixel_spacing: float = 0.45,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
) -> bytes:
    """One CT slice as DICOM bytes (unsigned 16-bit, slope 0.1, intercept -1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID = study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.FrameOfReferenceUID = generate_uid()
    dataset.Modality = "CT"
    dataset.PatientName = patient_name
    dataset.PatientID = patient_id
    dataset.StudyDescription = "CT HEAD WITHOUT CONTRAST"
    dataset.StudyDate = "20260101"
    dataset.ImageType = list(image_type)
    dataset.InstanceNumber = instance_number
    dataset.ImagePositionPatient = [-115.0, -115.0, float(position_z)]
    dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    dataset.PixelSpacing = [pixel_spacing, pixel_spacing]
    dataset.SliceThickness = 5.0
    dataset.Rows, dataset.Columns = grey.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope = RESCALE_SLOPE
    dataset.RescaleIntercept = RESCALE_INTERCEPT
    stored = np.round((grey_to_hounsfield(grey) - RESCALE_INTERCEPT) / RESCALE_SLOPE).astype(np.uint16)
    dataset.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def series_from_jpegs(
    paths: Sequence[Path], spacing_mm: float = 5.0, study_uid: str | None = None
) -> list[tuple[str, bytes]]:
    """A CT series (one DICOM per JPEG, in the given anatomical order), named by SOP UID.

    The file names carry no order: callers shuffle them to test geometric ordering.
    """
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    files = []
    for index, path in enumerate(paths):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise ValueError(f"Could not read {path}.")
        data = ct_slice(grey, index * spacing_mm, index + 1, study_uid, series_uid)
        files.append((f"{generate_uid()}.dcm", data))
    return files


def patient_jpegs(data_dir: Path, patient: str) -> list[Path]:
    """A CT-ICH patient's brain-window slices in slice order."""
    folder = data_dir / "ct_ich" / "Patients_CT" / patient / "brain"
    return sorted(folder.glob("*.jpg"), key=lambda path: int(path.stem))
