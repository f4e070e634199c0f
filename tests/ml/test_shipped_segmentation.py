"""The shipped segmentation model, measured again on its held-out data: card and targets.

The held-out ``bhsd_seg`` volumes and CT-ICH test slices are read and segmented again; no
figure is taken from the card without being recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ml.evaluate_seg import evaluate_bundle
from ml.export import bundle_size_mib
from ml.model_io import discover_models

pytestmark = pytest.mark.slow

STORE = Path(__file__).resolve().parents[2] / "model_store"
SEGMENTATION_MODEL = "ich-unet"
CLASSIFIER_MODEL = "ich-compact"

# Targets the model does not reach yet, with the measured figures; strict, so a model that
# reaches one turns its entry into a failure until the entry is removed.
KNOWN_SHORTFALLS: dict[str, str] = {
    "pointing_game": (
        "ich-compact 1.1.0 Grad-CAM peak inside the labelled bleed on 1 of 15 held-out bhsd_seg "
        "slices (0.07, 95% CI 0.01-0.30; 0.23 on all 52 slices); target 0.80"
    ),
}


def _target(name: str) -> Any:
    if name in KNOWN_SHORTFALLS:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_SHORTFALLS[name]))
    return name


@pytest.fixture(scope="module")
def model_dir() -> Path:
    versions = discover_models(STORE).get(SEGMENTATION_MODEL)
    assert versions, f"No {SEGMENTATION_MODEL} model in {STORE}."
    return versions[-1]


@pytest.fixture(scope="module")
def card(model_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((model_dir / "model_card.json").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def report(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    return evaluate_bundle(model_dir, data_dir, resamples=200)


def test_card_is_complete_and_bundle_small(card: dict[str, Any], model_dir: Path) -> None:
    for field in (
        "name",
        "version",
        "kind",
        "created",
        "preprocessing",
        "input_shape",
        "blood_threshold",
        "min_component_px",
        "subtypes",
        "training",
        "metrics",
        "pointing_game",
        "intended_use",
        "limitations",
        "reproduce",
    ):
        assert field in card, field
    assert card["kind"] == "segmentation"
    assert "Not for clinical use" in card["intended_use"]
    assert bundle_size_mib(model_dir) < 20


def test_preprocessing_is_the_classifiers(card: dict[str, Any]) -> None:
    classifier_dir = discover_models(STORE)[CLASSIFIER_MODEL][-1]
    classifier_card = json.loads((classifier_dir / "model_card.json").read_text(encoding="utf-8"))
    assert card["preprocessing"] == classifier_card["preprocessing"]


def test_held_out_volumes_never_trained_on(model_dir: Path) -> None:
    manifest = json.loads((model_dir / "split_manifest.json").read_text(encoding="utf-8"))
    volumes = manifest["bhsd_seg_volumes"]
    assert not set(volumes["train"]) & set(volumes["test"])
    assert not set(volumes["validation"]) & set(volumes["test"])
    assert len(volumes["test"]) >= 8


def test_card_metrics_match_recomputed(card: dict[str, Any], report: dict[str, Any]) -> None:
    test = card["metrics"]["test"]
    for name in ("any_blood", "intraparenchymal", "intraventricular"):
        for metric in ("dice", "iou"):
            stored = test["segmentation"][name][metric]["value"]
            recomputed = report["segmentation"][name][metric]["value"]
            assert recomputed == pytest.approx(stored, abs=2e-3), (name, metric)
    assert (
        report["segmentation"]["lesion_detection"]["found"]
        == test["segmentation"]["lesion_detection"]["found"]
    )
    assert report["normal_ct_ich_slices"]["clear"] == test["normal_ct_ich_slices"]["clear"]
    for name, entry in test["subtypes_ct_ich"].items():
        assert report["subtypes_ct_ich"][name]["auc"]["value"] == pytest.approx(
            entry["auc"]["value"], abs=2e-3
        )
    assert report["pointing_game"]["hit_rate"] == pytest.approx(
        card["pointing_game"]["test_volumes"]["hit_rate"]
    )
    for name, entry in test["subtypes_held_out"].items():
        assert report["subtypes_held_out"][name]["n_positive"] == entry["n_positive"]
        assert report["subtypes_held_out"][name]["auc"]["value"] == pytest.approx(
            entry["auc"]["value"], abs=2e-3
        )
    for key in ("flagged_haemorrhage_slices", "flagged_normal_slices"):
        assert report["ct_ich_slices"][key] == test["ct_ich_slices"][key]


@pytest.mark.parametrize(
    "target", [_target("any_blood_dice"), _target("normal_slices_clear"), _target("pointing_game")]
)
def test_targets(target: str, report: dict[str, Any]) -> None:
    if target == "any_blood_dice":
        assert report["segmentation"]["any_blood"]["dice"]["value"] >= 0.60
    elif target == "normal_slices_clear":
        assert report["normal_ct_ich_slices"]["clear_fraction"] >= 0.90
    else:
        assert report["pointing_game"]["hit_rate"] >= 0.80


def test_subtypes_with_few_examples_are_flagged(report: dict[str, Any]) -> None:
    for entry in report["subtypes_ct_ich"].values():
        assert entry["too_few_to_trust"] == (entry["n_positive"] < 10)
