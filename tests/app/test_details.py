"""The typed details records: every shape the service writes reads back unchanged, older and
malformed rows still read, and bad values are refused where a record is built."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from app.db import Prediction, Study, StudySlice
from app.services.details import (
    PredictionDetails,
    ScopeRecord,
    SkippedFile,
    SliceSegmentationRecord,
    StudyDetails,
    StudySegmentationRecord,
)
from app.services.predictions import prediction_scope
from app.services.study_record import StudyRecord

SUBTYPES = {
    name: {"probability": 0.1, "area_px": 3, "area_mm2": None}
    for name in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
}
SLICE_SEGMENTATION: dict[str, Any] = {
    "model": {"name": "ich-unet", "version": "1.1.0"},
    "pixel_spacing_mm": None,
    "subtypes": SUBTYPES,
    "blood_area_px": 15,
    "blood_area_mm2": None,
}
PREDICTION_DETAILS: dict[str, Any] = {
    "modality": "CT",
    "study_instance_uid": "1.2.3",
    "series_instance_uid": "1.2.3.4",
    "sop_instance_uid": "1.2.3.4.5",
    "pixel_spacing_mm": [0.5, 0.5],
    "scope": {
        "in_scope": True,
        "reasons": [],
        "colourfulness": 0.0,
        "contrast": 41.2,
        "head_fraction": 0.6,
        "ellipse_fit": 0.93,
        "edge_contact": 0.0,
        "rim_coverage": 0.8,
        "roughness": 0.05,
    },
    "segmentation": SLICE_SEGMENTATION,
}
STUDY_SEGMENTATION: dict[str, Any] = {
    "model": {"name": "ich-unet", "version": "1.1.0"},
    "pixel_spacing_mm": [0.5, 0.5],
    "slice_spacing_mm": 5.0,
    "slice_spacing_source": "positions",
    "volume_ml": 1.25,
    "volume_unavailable_reason": None,
    "abc2": {"volume_ml": 1.1, "a_mm": 20.0, "b_mm": 11.0, "c_mm": 10.0},
    "blood_area_px": 30,
    "subtypes": {
        name: {"probability": 0.2, "area_px": 6, "volume_ml": 0.25}
        for name in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
    },
    "slices": [
        {"probabilities": [0.1, 0.2, 0.1, 0.1, 0.1], "area_px": [0, 15, 0, 0, 0]},
        {"probabilities": [0.1, 0.1, 0.1, 0.1, 0.1], "area_px": [0, 15, 0, 0, 0]},
    ],
}
STUDY_DETAILS: dict[str, Any] = {
    "slice_threshold": 0.5,
    "slice_operating_point": "model card default",
    "key_slices": [1, 0],
    "ordering": "position",
    "skipped": [{"name": "scout.dcm", "reason": "not an axial slice"}],
    "other_series": ["1.2.3.9"],
    "segmentation": STUDY_SEGMENTATION,
    "pacs_series_candidates": 2,
    "stored_in_pacs": [
        {"kind": "encapsulated_pdf", "series_instance_uid": "1.2.9", "sop_instance_uids": ["1.2.9.1"]}
    ],
}


def test_what_the_service_writes_reads_back_unchanged() -> None:
    assert PredictionDetails.read(PREDICTION_DETAILS).stored() == PREDICTION_DETAILS
    assert StudyDetails.read(STUDY_DETAILS).stored() == STUDY_DETAILS


def test_unknown_keys_are_kept() -> None:
    raw = {**STUDY_DETAILS, "written_by_a_later_version": {"x": 1}}
    assert StudyDetails.read(raw).stored() == raw


def test_older_rows_without_the_newer_keys_read_with_defaults() -> None:
    details = PredictionDetails.read({})
    assert details.scope is None and details.segmentation is None
    assert PredictionDetails.read(None).stored() == {}
    study = StudyDetails.read({"slice_threshold": 0.4})
    assert study.key_slices is None
    assert study.ordering == "position"
    assert study.skipped == [] and study.stored_in_pacs == []
    assert study.segmentation is None


def test_malformed_entries_are_dropped_and_the_rest_kept(caplog: pytest.LogCaptureFixture) -> None:
    details = PredictionDetails.read({"scope": "yes", "segmentation": {"subtypes": 3}, "modality": "CT"})
    assert details.scope is None and details.segmentation is None
    assert details.modality == "CT"
    assert "ignoring malformed" in caplog.text
    study = StudyDetails.read({**STUDY_DETAILS, "skipped": "none", "key_slices": "first"})
    assert study.skipped == [] and study.key_slices is None
    assert study.slice_threshold == 0.5


def test_scope_reasons_are_text_and_anything_else_none() -> None:
    assert ScopeRecord.model_validate({"in_scope": False, "reasons": [1, "colour"]}).reasons == [
        "1",
        "colour",
    ]
    assert ScopeRecord.model_validate({"in_scope": False, "reasons": "colour"}).reasons == []


def test_a_study_without_an_outline_model_reads() -> None:
    assert StudySegmentationRecord.model_validate({**STUDY_SEGMENTATION, "model": {}}).model is None


@pytest.mark.parametrize(
    ("model", "value"),
    [
        (SkippedFile, {"name": "a.dcm"}),
        (SliceSegmentationRecord, {**SLICE_SEGMENTATION, "blood_area_px": "many"}),
        (SliceSegmentationRecord, {**SLICE_SEGMENTATION, "model": {"name": "ich-unet"}}),
        (StudySegmentationRecord, {**STUDY_SEGMENTATION, "slice_spacing_source": "guessed"}),
    ],
)
def test_bad_values_are_refused_when_a_record_is_built(model: type[Any], value: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(value)


def _prediction(label: str, details: dict[str, Any] | None) -> Prediction:
    return Prediction(id="p", label=label, details=details)


def test_prediction_scope_of_old_and_new_rows() -> None:
    assert prediction_scope(_prediction("hemorrhage", {})) == (True, [])
    assert prediction_scope(_prediction("out_of_scope", None)) == (False, [])
    stored = {"scope": {"in_scope": False, "reasons": ["A colour photograph."]}}
    assert prediction_scope(_prediction("out_of_scope", stored)) == (False, ["A colour photograph."])


def test_study_record_reads_its_details_once() -> None:
    study = Study(id="s", created_at=datetime.now(UTC), details=STUDY_DETAILS)
    slices = [
        StudySlice(study_id="s", slice_index=index, probability=p) for index, p in enumerate([0.2, 0.9])
    ]
    record = StudyRecord(study=study, slices=slices)
    assert record.key_slices == [1, 0]
    assert record.skipped == [{"name": "scout.dcm", "reason": "not an axial slice"}]
    assert record.details.segmentation is not None and record.details.segmentation.volume_ml == 1.25
    older = StudyRecord(study=Study(id="s", details={}), slices=slices)
    assert older.key_slices == [1, 0]
    assert older.skipped == []
