"""The served network (ich-multitask), measured again on the real data: its card must hold, and the
product's targets are checked on its held-out test patients.

Every figure is recomputed from the images (never read back from stored numbers) and compared
with the model card; targets the network does not reach yet are strict expected failures that
name the measured figure, so reaching one turns it into a failure until the entry is removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ml.data.splits import load_manifest
from ml.evaluation.metrics import sensitivity_at_specificity
from ml.evaluation.robustness import PERTURBATIONS, robustness_report
from ml.export import bundle_size_mib
from ml.model_io import ModelBundle, discover_models, load_bundle
from ml.multitask import Part, Predictor, prepare_parts
from ml.multitask_bundle import CLASSIFIED, classifier_test_samples, held_out_metrics, run_config
from tests.support.targets import assert_answer_unchanged, perturbations, with_shortfalls

pytestmark = pytest.mark.slow

STORE = Path(__file__).resolve().parents[2] / "model_store"
SERVED_MODEL = "ich-multitask"

# Targets of the product that the served version does not reach yet, with what it measured on
# the test split (its slice head is ich-compact 1.1.0's, so the slice figures are too; its study
# rule adds the outline criterion).
KNOWN_SHORTFALLS: dict[str, str] = {
    "ct_ich_slice_auc": "ich-multitask 1.1.0: AUC 0.896, 95% CI 0.817-0.973 (target 0.95)",
    "ct_ich_sensitivity_at_specificity_0.90": "ich-multitask 1.1.0: 0.60 (target 0.90)",
    "head_ct_auc": "ich-multitask 1.1.0: AUC 0.910, 95% CI 0.776-1.000 on 24 images (target 0.97)",
    "head_ct_accuracy": "ich-multitask 1.1.0: accuracy 0.54 at the served threshold (target 0.90)",
    "study_sensitivity": "ich-multitask 1.1.0: 17 of 18 bleeding patients flagged, 0.94 (target 0.95); CT-ICH 3 of 4",
    "ct_ich_study_specificity": "ich-multitask 1.1.0: 1 of 5 CT-ICH normal patients cleared (target 0.80)",
    "bhsd_seg_heat_map_in_the_bleed": "ich-multitask 1.1.0: heat map peak in the bleed on 1 of 15 slices (target 0.80)",
}
# Perturbations that still move the answer, with what they measured.
NOT_YET_ROBUST: dict[str, str] = {
    "rotate_90": "a quarter turn: mean change 0.114, 16.0% flips (the slice head of ich-compact 1.1.0)",
}


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    versions = discover_models(STORE).get(SERVED_MODEL)
    assert versions, f"No {SERVED_MODEL} model in {STORE}."
    return load_bundle(versions[-1])


@pytest.fixture(scope="module")
def test_parts(
    bundle: ModelBundle, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Part]:
    config = run_config(bundle.path)
    return prepare_parts(data_dir, config, tmp_path_factory.mktemp("parts"))["test"]


@pytest.fixture(scope="module")
def measured(bundle: ModelBundle, test_parts: dict[str, Part]) -> dict[str, Any]:
    card = bundle.card
    return held_out_metrics(
        Predictor(bundle.model),
        test_parts,
        float(card["threshold"]),
        card["study_aggregation"],
        float(card["study_threshold"]),
        float(card["blood_threshold"]),
        int(card["min_component_px"]),
        card.get("study_outline_px"),
    )


def test_card_is_complete_and_bundle_small(bundle: ModelBundle) -> None:
    card = bundle.card
    assert card["kind"] == "multitask"
    for field in (
        "threshold",
        "threshold_rule",
        "study_aggregation",
        "study_threshold",
        "study_selection",
        "blood_threshold",
        "min_component_px",
        "gradcam_layer",
        "preprocessing",
        "training",
        "metrics",
        "robustness",
        "limitations",
        "reproduce",
    ):
        assert field in card, field
    assert "not for clinical use" in card["intended_use"].lower()
    assert any("non-commercial" in line for line in card["limitations"])
    assert card["training"]["licence"].startswith("PHE-SICH-CT-IDS: non-commercial")
    assert bundle.model.get_layer(card["gradcam_layer"]) is not None
    # A few MiB: the served network stays small.
    assert bundle_size_mib(bundle.path) < 5.0


def test_split_keeps_patients_apart(bundle: ModelBundle) -> None:
    manifest = json.loads((bundle.path / "split_manifest.json").read_text(encoding="utf-8"))
    train, validation, test = (set(manifest[split]["patients"]) for split in ("train", "validation", "test"))
    assert train and validation and test
    assert not train & validation and not train & test and not validation & test
    # CT-ICH and head_ct keep the classifiers' split: none of their test patients was learnt from.
    shared = load_manifest(Path(run_config(bundle.path).split_manifest))
    assert not shared["test"] & (train | validation)


def test_card_test_figures_are_reproduced_from_the_images(
    bundle: ModelBundle, measured: dict[str, Any]
) -> None:
    stored = bundle.card["metrics"]["test"]
    for collection in CLASSIFIED:
        for metric in ("auc", "sensitivity", "specificity", "accuracy"):
            assert measured["slices"][collection]["metrics"][metric]["value"] == pytest.approx(
                stored["slices"][collection]["metrics"][metric]["value"], abs=0.005
            ), (collection, metric)
    for collection, figures in stored["studies"].items():
        for measure in ("sensitivity", "specificity"):
            assert measured["studies"][collection][measure]["count"] == figures[measure]["count"], (
                collection,
                measure,
            )
    for key in ("bhsd_seg_any_blood_dice", "normal_ct_ich_slices_clear"):
        assert measured["outlines"][key] == pytest.approx(stored["outlines"][key], abs=0.005), key
    for collection, figures in stored["pointing_game"].items():
        assert measured["pointing_game"][collection]["slices"] == figures["slices"] > 0
        assert measured["pointing_game"][collection]["hit_rate"] == pytest.approx(
            figures["hit_rate"], abs=0.02
        )


def _slice_auc(measured: dict[str, Any], collection: str) -> float:
    return float(measured["slices"][collection]["metrics"]["auc"]["value"])


@pytest.mark.parametrize(
    "target",
    with_shortfalls(
        [
            "ct_ich_slice_auc",
            "ct_ich_sensitivity_at_specificity_0.90",
            "phe_sich_slice_auc",
            "head_ct_auc",
            "head_ct_accuracy",
            "study_sensitivity",
            "ct_ich_study_specificity",
            "outline_dice",
            "normal_slices_without_outline",
            "bhsd_seg_heat_map_in_the_bleed",
            "phe_sich_heat_map_in_the_box",
        ],
        KNOWN_SHORTFALLS,
    ),
)
def test_targets_on_held_out_patients(
    target: str, bundle: ModelBundle, measured: dict[str, Any], test_parts: dict[str, Part]
) -> None:
    studies, outlines = measured["studies"], measured["outlines"]
    if target == "ct_ich_slice_auc":
        assert _slice_auc(measured, "ct_ich") >= 0.95
    elif target == "ct_ich_sensitivity_at_specificity_0.90":
        part = test_parts["ct_ich"]
        keep = part.label_weights > 0
        probabilities = Predictor(bundle.model)(part).probability
        assert sensitivity_at_specificity(part.labels[keep], probabilities[keep], 0.90) >= 0.90
    elif target == "phe_sich_slice_auc":
        assert _slice_auc(measured, "phe_sich") >= 0.97
    elif target == "head_ct_auc":
        assert _slice_auc(measured, "head_ct") >= 0.97
    elif target == "head_ct_accuracy":
        assert measured["slices"]["head_ct"]["metrics"]["accuracy"]["value"] >= 0.90
    elif target == "study_sensitivity":
        assert studies["all"]["sensitivity"]["value"] >= 0.95
    elif target == "ct_ich_study_specificity":
        assert studies["ct_ich"]["specificity"]["value"] >= 0.80
    elif target == "outline_dice":
        assert outlines["bhsd_seg_any_blood_dice"] >= 0.60
    elif target == "normal_slices_without_outline":
        assert outlines["normal_ct_ich_slices_clear"] >= 0.90
    else:
        collection = target.split("_heat_map")[0]
        assert measured["pointing_game"][collection]["hit_rate"] >= 0.80


@pytest.fixture(scope="module")
def robustness(bundle: ModelBundle, data_dir: Path) -> dict[str, Any]:
    config = run_config(bundle.path)
    samples = classifier_test_samples(config, data_dir)
    return robustness_report(bundle.model, samples, config.preprocess_config, float(bundle.card["threshold"]))


def test_the_card_robustness_is_reproduced(bundle: ModelBundle, robustness: dict[str, Any]) -> None:
    assert set(robustness) == {"n", *PERTURBATIONS}
    for name in PERTURBATIONS:
        assert robustness[name]["mean_abs_change"] == pytest.approx(
            bundle.card["robustness"][name]["mean_abs_change"], abs=0.002
        ), name


@pytest.mark.parametrize("perturbation", perturbations(NOT_YET_ROBUST))
def test_changes_that_carry_no_diagnosis_do_not_change_the_answer(
    robustness: dict[str, Any], perturbation: str
) -> None:
    assert_answer_unchanged(robustness, perturbation)
