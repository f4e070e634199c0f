"""The DICOM objects stored back in the PACS, built from a study record and the bytes they embed."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import cv2
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from app.db import Study, StudySlice
from app.services.details import StudyDetails
from app.services.pacs.objects import (
    PDF_SERIES_NUMBER,
    SC_SERIES_NUMBER,
    WARNING_TEXT,
    encapsulated_pdf,
    secondary_captures,
)
from app.services.study_record import StudyRecord
from tests.support.dicom_series import ct_slice


def _sources(count: int) -> list[pydicom.Dataset]:
    study_uid, series_uid = generate_uid(), generate_uid()
    grey = np.full((64, 64), 120, np.uint8)
    return [
        pydicom.dcmread(io.BytesIO(ct_slice(grey, 5.0 * index, index + 1, study_uid, series_uid)))
        for index in range(count)
    ]


def _record(sources: list[pydicom.Dataset], key_slices: list[int]) -> StudyRecord:
    study = Study(
        id="0b9f3c1e-2a4d-4c6e-8f10-2b3c4d5e6f70",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        model_name="ich-multitask",
        model_version="1.1.0",
        probability=0.9,
        label="hemorrhage",
        threshold=0.571,
        operating_point="model card default",
        aggregation="top3_mean",
        num_slices=len(sources),
        source="dicomweb",
        details=StudyDetails(key_slices=key_slices).stored(),
    )
    slices = [
        StudySlice(slice_index=index, sop_instance_uid=str(item.SOPInstanceUID), probability=0.5)
        for index, item in enumerate(sources)
    ]
    return StudyRecord(study=study, slices=slices)


def test_each_key_slice_becomes_a_secondary_capture_with_the_warning_burned_in() -> None:
    sources = _sources(3)
    overlay = np.full((64, 64, 3), 200, np.uint8)
    png = cv2.imencode(".png", overlay)[1].tobytes()
    images = secondary_captures(_record(sources, [2, 0]), sources, {2: png, 0: png})
    assert [int(image.InstanceNumber) for image in images] == [1, 2]
    assert len({str(image.SeriesInstanceUID) for image in images}) == 1
    for image, source in zip(images, (sources[2], sources[0]), strict=True):
        assert image.SeriesNumber == SC_SERIES_NUMBER and image.BurnedInAnnotation == "YES"
        assert WARNING_TEXT in image.ImageComments and image.ManufacturerModelName == "ich-multitask"
        assert image.StudyInstanceUID == source.StudyInstanceUID and image.PatientID == source.PatientID
        assert image.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        # The band that carries the warning is darkened, the rest of the overlay is as stored.
        assert image.pixel_array[1, 1].max() < 200 and (image.pixel_array[32, 32] == 200).all()


def test_the_pdf_report_is_encapsulated_in_the_source_study() -> None:
    (source,) = _sources(1)
    pdf = b"%PDF-1.4 report"  # 15 bytes
    dataset = encapsulated_pdf(_record([source], [0]), source, pdf)
    assert (
        dataset.SeriesNumber == PDF_SERIES_NUMBER
        and dataset.MIMETypeOfEncapsulatedDocument == "application/pdf"
    )
    assert WARNING_TEXT in dataset.DocumentTitle and dataset.SoftwareVersions == "1.1.0"
    assert dataset.StudyInstanceUID == source.StudyInstanceUID and dataset.PatientID == source.PatientID
    # An OB value has an even length: the odd PDF is padded, its own length kept beside it.
    assert dataset.EncapsulatedDocument == pdf + b"\x00" and dataset.EncapsulatedDocumentLength == len(pdf)
    evidence = dataset.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )
