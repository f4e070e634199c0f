"""ml.operating_point: the site operating point file, what it accepts and what it refuses."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ml.operating_point import OperatingPoint, OperatingPointError, load_operating_point


def point_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": "ich-detect-operating-point",
        "format_version": 1,
        "model": {"name": "ich-compact", "version": "1.1.0"},
        "slice_threshold": 0.738813,
        "study_threshold": 0.71,
        "study_aggregation": "top3_mean",
        "chosen_on": {
            "labels": "site-validation.csv",
            "images": 212,
            "positive_images": 41,
            "target_sensitivity": 0.95,
            "slice": {"sensitivity": 0.951, "specificity": 0.62},
            "study": {"patients": 30, "sensitivity": 1.0, "specificity": 0.7},
        },
        "created": "2026-12-01",
    }
    data.update(changes)
    return data


def written(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "operating-point.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_file_round_trips_and_names_where_it_was_chosen(tmp_path: Path) -> None:
    point = load_operating_point(written(tmp_path, point_data()))
    assert point.slice_threshold == 0.738813 and point.study_threshold == 0.71
    assert point.created == date(2026, 12, 1)
    assert point.slice_source() == (
        "site operating point, chosen on 212 images on 2026-12-01 "
        "(site-validation.csv: sensitivity 0.95, specificity 0.62)"
    )
    assert point.study_source() == (
        "site operating point, chosen on 30 patients on 2026-12-01 "
        "(site-validation.csv: sensitivity 1.00, specificity 0.70)"
    )
    again = load_operating_point(point.write(tmp_path / "copy" / "point.json"))
    assert again == point


def test_a_slice_threshold_alone_leaves_studies_to_the_card(tmp_path: Path) -> None:
    data = point_data(study_threshold=None, study_aggregation=None)
    data["chosen_on"]["study"] = None
    point = load_operating_point(written(tmp_path, data))
    assert point.study_threshold is None and point.study_source() is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"slice_threshold": 1.0}, "slice_threshold: Input should be less than 1"),
        ({"slice_threshold": 0.0}, "slice_threshold: Input should be greater than 0"),
        ({"study_threshold": 1.7}, "study_threshold: Input should be less than 1"),
        ({"slice_threshold": "high"}, "slice_threshold"),
        ({"model": {"name": "ich-compact"}}, "model.version: Field required"),
        ({"format": "something-else"}, "format"),
        ({"format_version": 2}, "format_version"),
        ({"created": "yesterday"}, "created"),
        ({"thresholds": [0.2]}, "thresholds: Extra inputs are not permitted"),
        ({"study_aggregation": None}, "study_threshold needs study_aggregation"),
    ],
)
def test_invalid_files_are_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(OperatingPointError, match="is not a valid operating point file") as caught:
        load_operating_point(written(tmp_path, point_data(**changes)))
    assert message in str(caught.value)


def test_counts_must_add_up(tmp_path: Path) -> None:
    data = point_data()
    data["chosen_on"]["positive_images"] = 500
    with pytest.raises(OperatingPointError, match=r"positive_images \(500\) exceeds images \(212\)"):
        load_operating_point(written(tmp_path, data))


def test_unreadable_and_non_json_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OperatingPointError, match="cannot be read.*FileNotFoundError"):
        load_operating_point(tmp_path / "missing.json")
    with pytest.raises(OperatingPointError, match="cannot be read"):
        load_operating_point(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(OperatingPointError, match="is not JSON"):
        load_operating_point(broken)


def test_a_point_serves_only_the_model_it_was_chosen_for() -> None:
    point = OperatingPoint.model_validate(point_data())
    point.check_model("ich-compact", "1.1.0", "top3_mean")
    with pytest.raises(
        OperatingPointError, match="chosen for ich-compact 1.1.0, but the model served is ich-compact 1.0.0"
    ):
        point.check_model("ich-compact", "1.0.0", "top3_mean")
    with pytest.raises(OperatingPointError, match="model served is other 1.1.0"):
        point.check_model("other", "1.1.0")
    with pytest.raises(OperatingPointError, match="aggregation 'top3_mean'.*aggregates studies with 'max'"):
        point.check_model("ich-compact", "1.1.0", "max")
