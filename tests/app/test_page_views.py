"""The page views: formatters, a model card in readable pieces, and stored outlines."""

from __future__ import annotations

import math
from datetime import datetime
from typing import cast

import pytest

from app.api.routes.pages.filters import format_datetime, format_number, format_percent
from app.api.routes.pages.model_views import card_facts, card_view, training_facts, unseen_view
from app.api.routes.pages.views import outline_card, segmentation_view, study_segmentation_view
from app.services.card_views import CardMetrics, CollectionMeasures
from app.services.details import OutlineModel, SliceSegmentationRecord, StudySegmentationRecord
from app.services.registry import ModelRegistry
from app.services.segmentation import FALLBACK_NOTE
from ml.data.segmentation import SUBTYPES
from ml.model_card import ModelCard


@pytest.mark.parametrize(
    ("value", "text"), [(0.5, "0.50"), (3, "3.00"), (True, "n/a"), ("x", "n/a"), (math.nan, "n/a")]
)
def test_format_number(value: object, text: str) -> None:
    assert format_number(value) == text


def test_formatters_say_when_a_value_is_unknown() -> None:
    assert format_percent(None) == "n/a" and format_percent(0.1234) == "12.3%"
    assert (
        format_datetime(None) == ""
        and format_datetime(datetime(2026, 12, 1, 7, 38)) == "01 Dec 2026, 07:38 UTC"
    )


def test_card_parts_that_are_not_objects_read_as_empty() -> None:
    metrics = CardMetrics.from_metrics(
        {"validation": [("all", 1)], "test": {"all": None, "ct_ich": {"slice": {"n": 3, "metrics": "auc"}}}}
    )
    assert metrics.validation == {} and metrics.external_bhsd_seg.slices is None
    assert metrics.test["all"] == CollectionMeasures()
    assert metrics.test["ct_ich"].slice.n == 3 and metrics.test["ct_ich"].slice.metrics == {}


def test_a_small_card_shows_what_it_states() -> None:
    card = ModelCard.from_mapping({"name": "m", "version": "1", "threshold": 0.25, "parameters": 1200})
    view = card_view(card)
    assert (view["name"], view["version"]) == ("m", "1")
    assert view["facts"] == [("Parameters", "1,200"), ("Decision threshold", "0.250")]
    assert view["training_facts"] == [] and view["counts"] == [] and view["splits"] == []
    assert view["unseen"] is None and view["limitations"] == [] and view["perturbations"] == []


def test_a_full_card_reads_in_words() -> None:
    card = ModelCard.from_mapping(
        {
            "name": "m",
            "version": "1",
            "created": "2026-11-26T16:45:44Z",
            "backbone": "compact",
            "input_shape": [224, 224, 1],
            "threshold": 0.3,
            "threshold_rule": "sensitivity >= 0.95",
            "training": {
                "datasets": ["head_ct", "other"],
                "seconds": 90.0,
                "epochs_run": 3,
                "counts": {"train": {"images": 10, "positive": 4, "patients": 5}},
            },
            "metrics": {
                "external_bhsd_seg": {
                    "slices": 20,
                    "slices_flagged": 15,
                    "sensitivity": 0.75,
                    "sensitivity_ci95": [0.5, 0.9],
                }
            },
            "robustness": {"n": 50, "half_resolution": {"mean_abs_change": 0.01, "flip_rate": 0.02}},
        }
    )
    assert ("Created", "2026-11-26 16:45:44 UTC") in card_facts(card)
    assert ("Decision threshold", "0.300 (sensitivity >= 0.95)") in card_facts(card)
    assert training_facts(card.training) == [
        ("Datasets", "head_ct (Kaggle), other"),
        ("Epochs", "3"),
        ("Training time", "1.5 minutes"),
    ]
    unseen = unseen_view(CardMetrics.from_metrics(card.metrics))
    assert unseen is not None and unseen["sensitivity"] == {"value": "0.75", "interval": "0.50 to 0.90"}
    view = card_view(card)
    assert view["counts"] == [{"split": "Train", "images": 10, "positive": 4, "patients": 5}]
    assert view["perturbations"][0]["flips"] == "2.0%" and view["robustness_n"] == 50


class CardShelf:
    """A registry stand-in that records which cards were asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def find_card(self, name: str, version: str) -> ModelCard | None:
        self.asked.append((name, version))
        return None


def test_outline_card_asks_only_for_a_named_model() -> None:
    shelf = CardShelf()
    assert outline_card(cast(ModelRegistry, shelf), None) is None
    assert shelf.asked == []
    assert outline_card(cast(ModelRegistry, shelf), OutlineModel(name="seg", version="2")) is None
    assert shelf.asked == [("seg", "2")]


def test_slice_outlines_read_from_the_typed_record() -> None:
    assert segmentation_view(None, None, "/c.png") is None
    record = SliceSegmentationRecord.read(
        {
            "model": {"name": "seg", "version": "2"},
            "subtypes": {"subdural": {"probability": 0.9, "area_px": 40, "area_mm2": 10.0}},
            "blood_area_px": 40,
            "blood_area_mm2": 10.0,
        }
    )
    view = segmentation_view(record, None, "/c.png")
    assert view is not None
    assert (view["model"].name, view["model"].version) == ("seg", "2")
    assert view["millimetres"] and view["blood"] and view["contours"] == "/c.png"
    rows = {row.name: row for row in view["rows"]}
    assert rows["subdural"].present and rows["subdural"].area_px == 40
    assert rows["subdural"].area_mm2 == 10.0 and rows["subdural"].probability == 0.9
    assert rows["subdural"].colour == "#cc79a7" and rows["subdural"].volume_ml is None
    assert not rows["epidural"].present and rows["epidural"].probability == 0.0
    assert view["help"] == [FALLBACK_NOTE]


def test_study_volumes_read_from_the_typed_record() -> None:
    assert study_segmentation_view(None, None) is None
    stored = StudySegmentationRecord.read(
        {"model": {}, "subtypes": {}, "volume_unavailable_reason": "No spacing."}
    )
    view = study_segmentation_view(stored, None)
    assert view is not None
    assert view["model"] is None and view["abc2"] is None and view["volume_ml"] is None
    assert view["reason"] == "No spacing." and view["summary"] == ["No spacing."]
    stored = StudySegmentationRecord.read(
        {
            "model": {"name": "seg", "version": "2"},
            "subtypes": {"subdural": {"probability": 0.8, "area_px": 100, "volume_ml": 1.5}},
            "pixel_spacing_mm": [0.5, 0.5],
            "slice_spacing_mm": 5.0,
            "slice_spacing_source": "positions",
            "blood_area_px": 100,
            "volume_ml": 1.5,
            "abc2": {"volume_ml": 1.2, "a_mm": 20.0, "b_mm": 10.0, "c_mm": 12.0},
        }
    )
    view = study_segmentation_view(stored, None)
    assert view is not None and view["abc2"] is not None and view["abc2"].volume_ml == 1.2
    assert view["summary"][0].startswith("Outlined blood volume 1.5 mL by voxel counting: 100 pixels")
    assert view["summary"][1].startswith("Bedside ABC/2 estimate from the same outlines: 1.2 mL")
    rows = {row.name: row for row in view["rows"]}
    assert rows["subdural"].volume_ml == 1.5 and rows["subdural"].area_mm2 is None
    assert [row.name for row in view["rows"]] == list(SUBTYPES)
