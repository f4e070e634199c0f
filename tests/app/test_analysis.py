"""The parts of the analysis pipeline a slice and a study share."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from app.core.errors import InvalidUpload
from app.db import Prediction, Study
from app.services.analysis import (
    LIMITATIONS_FALLBACK,
    StageTimings,
    UploadFields,
    card_metrics,
    first_of,
    new_record_columns,
    patient_columns,
    report_preamble,
    short_id,
)


def test_upload_fields_are_stripped_blanks_dropped_and_limits_named() -> None:
    fields = UploadFields.from_form(patient_name="  Ada  ", patient_id=" ", study_description=None)
    assert fields == UploadFields(patient_name="Ada")
    with pytest.raises(InvalidUpload, match="Requesting clinician is longer than 200 characters"):
        UploadFields.from_form(requesting_clinician="x" * 201)


def test_the_uploads_fields_win_over_the_dicoms() -> None:
    metadata = {"patient_name": "DICOM^NAME", "patient_id": " 17 ", "study_date": "20260101"}
    columns = patient_columns(UploadFields(patient_name="Ada", requesting_clinician="Dr B"), metadata)
    assert columns == {
        "patient_name": "Ada",
        "patient_id": "17",
        "study_description": None,
        "study_date": "20260101",
        "requesting_clinician": "Dr B",
    }
    assert first_of(None, "", "  ", 42) == "42"
    assert first_of(None, " ") is None


def test_new_records_get_fresh_ids() -> None:
    first, second = new_record_columns("m", "1"), new_record_columns("m", "1")
    assert first["id"] != second["id"]
    assert first["model_name"] == "m" and first["model_version"] == "1"
    assert first["created_at"].tzinfo is not None


def test_short_id_hides_the_value_and_is_stable() -> None:
    assert short_id("1.2.3") == short_id("1.2.3") != short_id("1.2.4")
    assert "1.2.3" not in short_id("1.2.3") and len(short_id("1.2.3")) == 10


def test_stage_timings_add_up_and_are_rounded() -> None:
    timings = StageTimings(started=time.perf_counter() - 1.0)
    timings.add("decode", 1.23456)
    timings.add("decode", 1.0)
    with timings.measure("model"):
        pass
    finished = timings.finish()
    assert list(finished) == ["decode", "model", "total"]
    assert finished["decode"] == 2.23
    assert finished["total"] >= 1000.0


class FakeRegistry:
    def __init__(self, card: dict[str, Any]) -> None:
        self.card = card

    def loaded_card(self, name: str, version: str) -> dict[str, Any]:
        return self.card


@pytest.mark.parametrize("model", [Prediction, Study])
def test_report_preamble_of_either_record(model: type[Prediction] | type[Study]) -> None:
    record = model(
        id="r",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        model_name="ich-compact",
        model_version="1.1.0",
        probability=0.7,
        label="hemorrhage",
        threshold=0.5,
        operating_point="model card default",
        patient_name="Ada",
    )
    card = {
        "limitations": ["Small data."],
        "metrics": {"test": {"ct_ich": {"slice": {"metrics": {"auc": {"value": 0.9, "ci95": [0.8, 0.95]}}}}}},
    }
    preamble = report_preamble(FakeRegistry(card), record)  # type: ignore[arg-type]
    assert preamble["limitations"] == ["Small data."]
    assert preamble["model"].metrics == {"Test AUC, CT-ICH slices": "0.90 (95% CI 0.80-0.95)"}
    assert preamble["patient_name"] == "Ada" and preamble["patient_id"] is None
    assert report_preamble(FakeRegistry({}), record)["limitations"] == LIMITATIONS_FALLBACK  # type: ignore[arg-type]
    assert card_metrics({}) == {}
