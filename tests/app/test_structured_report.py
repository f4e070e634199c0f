"""The Comprehensive 3D SR a study stores in the PACS says which criterion of its rule flagged it."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pydicom
import pytest

from app.db import Study
from app.services.details import StudyCriteria, StudyDetails
from app.services.pacs.objects import structured_report
from app.services.study_record import StudyRecord
from tests.app.conftest import DATA_DIR
from tests.support.dicom_series import patient_jpegs, series_from_jpegs

pytestmark = pytest.mark.data


def _comment(report: pydicom.Dataset) -> str:
    for item in report.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "121106":
            return str(item.TextValue)
    raise AssertionError("The SR has no comment.")


def _study(label: str, probability: float, criteria: StudyCriteria | None) -> Study:
    details = StudyDetails(criteria=criteria) if criteria is not None else StudyDetails()
    return Study(
        id="6f1c2a52-7f1e-4f7e-9a53-3d0c1f2b9e10",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        model_name="ich-multitask",
        model_version="1.1.0",
        probability=probability,
        label=label,
        threshold=0.571,
        operating_point="model card default",
        aggregation="top3_mean",
        num_slices=30,
        source="dicomweb",
        details=details.stored(),
    )


def test_a_study_flagged_by_its_outline_alone_says_so_in_its_structured_report() -> None:
    name, data = series_from_jpegs(patient_jpegs(DATA_DIR, "050")[10:11])[0]
    source = pydicom.dcmread(io.BytesIO(data))
    outline = StudyCriteria(flagged_by=["outline"], outline_threshold_px=361, outline_px=900)
    report = structured_report(StudyRecord(_study("hemorrhage", 0.4, outline), []), [source])
    comment = _comment(report)
    assert "flagged by its outline: 900 outlined pixels of blood (criterion: 361)" in comment
    assert "Not for clinical use".lower() in comment.lower()
    # A rule without the outline criterion keeps the comment as it was.
    plain = structured_report(StudyRecord(_study("hemorrhage", 0.8, None), []), [source])
    assert "outline" not in _comment(plain)
