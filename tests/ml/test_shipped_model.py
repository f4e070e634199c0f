"""The shipped model, measured again on the real data: its card must hold, and its targets.

These tests recompute the test-split metrics from the images (never from stored numbers) and
compare them with the model card and with the product's targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml.data.datasets import Sample
from ml.data.splits import load_manifest
from ml.evaluation.metrics import binary_metrics, patient_level, sensitivity_at_specificity
from ml.evaluation.robustness import PERTURBATIONS, robustness_report
from ml.export import bundle_size_mib, external_sensitivity, split_probabilities, split_samples
from ml.model_io import ModelBundle, discover_models, load_bundle
from tests.support.targets import assert_answer_unchanged, perturbations, with_shortfalls

pytestmark = pytest.mark.slow

STORE = Path(__file__).resolve().parents[2] / "model_store"
SERVED_MODEL = "ich-compact"

# Targets that the model does not reach yet, with the measured figures; strict, so a model that
# reaches them turns these into failures until the entry is removed.
KNOWN_SHORTFALLS: dict[str, str] = {
    "head_ct_accuracy": "ich-compact 1.1.0: accuracy 0.54 at the shared threshold (target 0.95)",
    "head_ct_auc": "ich-compact 1.1.0: AUC 0.91, 95% CI 0.77-1.00 on 24 images (target 0.98)",
    "ct_ich_slice_auc": "ich-compact 1.1.0: AUC 0.90, 95% CI 0.81-1.00 (target 0.95)",
    "ct_ich_sensitivity_at_specificity_0.90": "ich-compact 1.1.0: 0.60 (target 0.90)",
}


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    versions = discover_models(STORE).get(SERVED_MODEL)
    assert versions, f"No {SERVED_MODEL} model in {STORE}."
    return load_bundle(versions[-1])


@pytest.fixture(scope="module")
def test_split(bundle: ModelBundle, data_dir: Path) -> tuple[list[Sample], np.ndarray]:
    samples = split_samples(bundle, data_dir, "test")
    return samples, split_probabilities(bundle, samples)


def _subset(
    samples: list[Sample], probabilities: np.ndarray, dataset: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    chosen = [i for i, sample in enumerate(samples) if sample.dataset == dataset]
    labels = np.array([samples[i].label for i in chosen])
    return labels, probabilities[chosen], [samples[i].group for i in chosen]


def test_card_is_complete_and_bundle_small(bundle: ModelBundle) -> None:
    card = bundle.card
    for field in (
        "name",
        "version",
        "created",
        "threshold",
        "gradcam_layer",
        "preprocessing",
        "input_shape",
        "training",
        "metrics",
        "robustness",
        "intended_use",
        "limitations",
        "reproduce",
    ):
        assert field in card, field
    assert "not for clinical use" in card["intended_use"].lower()
    assert bundle.model.get_layer(card["gradcam_layer"]) is not None
    assert bundle_size_mib(bundle.path) < 20.0


def test_split_keeps_patients_apart(bundle: ModelBundle) -> None:
    manifest = load_manifest(bundle.path / "split_manifest.json")
    assert not manifest["train"] & manifest["validation"]
    assert not manifest["train"] & manifest["test"]
    assert not manifest["validation"] & manifest["test"]


def test_card_metrics_are_reproduced(
    bundle: ModelBundle, test_split: tuple[list[Sample], np.ndarray]
) -> None:
    samples, probabilities = test_split
    for dataset in ("head_ct", "ct_ich"):
        labels, probs, _ = _subset(samples, probabilities, dataset)
        recomputed = binary_metrics(labels, probs, bundle.threshold)
        stored = bundle.card["metrics"]["test"][dataset]["slice"]["metrics"]
        for metric in ("accuracy", "sensitivity", "specificity", "auc"):
            assert recomputed[metric] == pytest.approx(stored[metric]["value"], abs=0.01), (dataset, metric)


@pytest.mark.parametrize(
    "target",
    with_shortfalls(
        [
            "head_ct_accuracy",
            "head_ct_sensitivity",
            "head_ct_auc",
            "ct_ich_slice_auc",
            "ct_ich_sensitivity_at_specificity_0.90",
            "ct_ich_patient_sensitivity",
        ],
        KNOWN_SHORTFALLS,
    ),
)
def test_targets_on_the_test_split(
    target: str, bundle: ModelBundle, test_split: tuple[list[Sample], np.ndarray]
) -> None:
    samples, probabilities = test_split
    threshold = bundle.threshold
    head_labels, head_probs, _ = _subset(samples, probabilities, "head_ct")
    ich_labels, ich_probs, ich_groups = _subset(samples, probabilities, "ct_ich")
    if target.startswith("head_ct_"):
        metric = target.removeprefix("head_ct_")
        minimum = {"accuracy": 0.95, "sensitivity": 0.95, "auc": 0.98}[metric]
        assert binary_metrics(head_labels, head_probs, threshold)[metric] >= minimum
    elif target == "ct_ich_slice_auc":
        assert binary_metrics(ich_labels, ich_probs, threshold)["auc"] >= 0.95
    elif target == "ct_ich_sensitivity_at_specificity_0.90":
        assert sensitivity_at_specificity(ich_labels, ich_probs, 0.90) >= 0.90
    else:
        patient_labels, patient_probs, _ = patient_level(ich_labels, ich_probs, ich_groups)
        assert binary_metrics(patient_labels, patient_probs, threshold)["sensitivity"] == 1.0


# Measured on the test split when rotation joined the check: ich-compact 1.1.0 was trained with
# turns of at most 15 degrees, and a quarter turn moves its probability by 0.114 on average and
# flips 16.0% of its decisions.
NOT_YET_ROBUST = {"rotate_90": "a quarter turn: mean change 0.114, 16.0% flips (1.1.0)"}


@pytest.fixture(scope="module")
def robustness(bundle: ModelBundle, test_split: tuple[list[Sample], np.ndarray]) -> dict[str, Any]:
    samples, _ = test_split
    return robustness_report(bundle.model, samples, bundle.preprocess_config, bundle.threshold)


def test_the_robustness_check_applies_every_perturbation(robustness: dict[str, Any]) -> None:
    assert set(robustness) == {"n", *PERTURBATIONS}


@pytest.mark.parametrize("perturbation", perturbations(NOT_YET_ROBUST))
def test_changes_that_carry_no_diagnosis_do_not_change_the_answer(
    robustness: dict[str, Any], perturbation: str
) -> None:
    assert_answer_unchanged(robustness, perturbation)


def test_card_sensitivity_on_an_unseen_collection_is_reproduced(bundle: ModelBundle, data_dir: Path) -> None:
    # bhsd_seg comes from other hospitals and was never used by the classifier; every slice shows
    # haemorrhage, so it measures sensitivity only.
    stored = bundle.card["metrics"]["external_bhsd_seg"]
    recomputed = external_sensitivity(bundle, data_dir)
    assert recomputed["slices"] == stored["slices"] == 52
    assert recomputed["scans"] == stored["scans"]
    assert recomputed["sensitivity"] == pytest.approx(stored["sensitivity"], abs=0.02)
    assert recomputed["scan_sensitivity"] == pytest.approx(stored["scan_sensitivity"], abs=0.03)
    low, high = recomputed["sensitivity_ci95"]
    assert low <= recomputed["sensitivity"] <= high
