"""The page views: formatters, and a model card in readable pieces."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from app.api.routes.pages.filters import as_mapping, format_datetime, format_number, format_percent
from app.api.routes.pages.model_views import card_facts, card_view, training_facts, unseen_view
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
    assert as_mapping([1]) == {} and as_mapping({"a": 1}) == {"a": 1}


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
    unseen = unseen_view(card.metrics)
    assert unseen is not None and unseen["sensitivity"] == {"value": "0.75", "interval": "0.50 to 0.90"}
    view = card_view(card)
    assert view["counts"] == [{"split": "Train", "images": 10, "positive": 4, "patients": 5}]
    assert view["perturbations"][0]["flips"] == "2.0%" and view["robustness_n"] == 50
