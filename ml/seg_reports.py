"""What a trained segmenter is worth on held-out data: the reports its model card carries.

Dice and IoU pooled over slices with patient-bootstrap intervals, lesion detection, normal slices
left clear, CT-ICH slices flagged, subtype AUCs, and the pointing game of the classifier's
Grad-CAM against the hand-drawn masks. ``ml.seg_training`` writes them at the end of training;
``ml.evaluate_seg`` measures a bundle on other labelled slices with the same functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ml.data.segmentation import SUBTYPES
from ml.evaluation.metrics import summarize, wilson_interval
from ml.evaluation.segmentation import (
    POINTING_GAME_TARGET,
    bootstrap_pooled,
    dice,
    lesion_detection,
    overlap_counts,
    pointing_game_hit,
)
from ml.explain.gradcam import GradCam
from ml.model_io import load_bundle
from ml.segmenter import class_map_from_probabilities

if TYPE_CHECKING:
    from ml.seg_training import Prepared

__all__ = [
    "FEW_POSITIVES",
    "ct_ich_detection_report",
    "evaluate_segmentation",
    "normal_slices_report",
    "pointing_game",
    "pointing_game_limitations",
    "subtype_report",
]

# A subtype with fewer positive test slices than this is flagged as too few to trust.
FEW_POSITIVES = 10


def evaluate_segmentation(
    mask_probabilities: np.ndarray,
    masked: Prepared,
    blood_threshold: float,
    min_component_px: int,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Dice and IoU (any blood and per subtype; pooled with volume-bootstrap intervals, and
    per slice) and lesion detection on slices with true masks."""
    predictions = [
        class_map_from_probabilities(p.astype(np.float32), blood_threshold, min_component_px)
        for p in mask_probabilities
    ]
    groups = masked.groups
    report: dict[str, Any] = {}
    for index, name in enumerate(("any_blood", *SUBTYPES)):
        if index == 0:
            pairs = [(p > 0, t > 0) for p, t in zip(predictions, masked.masks, strict=True)]
        else:
            pairs = [(p == index, t == index) for p, t in zip(predictions, masked.masks, strict=True)]
        counts = [overlap_counts(p, t) for p, t in pairs]
        entry = bootstrap_pooled(counts, groups, resamples, seed)
        per_slice = [dice(p, t) for p, t in pairs if t.any()]
        entry["slices_with_class"] = len(per_slice)
        entry["per_slice_dice"] = {
            "mean": round(float(np.mean(per_slice)), 4) if per_slice else None,
            "median": round(float(np.median(per_slice)), 4) if per_slice else None,
        }
        report[name] = entry
    lesions: dict[str, Any] = {"lesions": 0, "found": 0, "predicted_components": 0, "false_components": 0}
    for prediction, truth in zip(predictions, masked.masks, strict=True):
        for key, value in lesion_detection(prediction > 0, truth > 0).items():
            lesions[key] += value
    lesions["sensitivity"] = round(lesions["found"] / lesions["lesions"], 4) if lesions["lesions"] else None
    lesions["sensitivity_ci95"] = wilson_interval(lesions["found"], lesions["lesions"])
    report["lesion_detection"] = lesions
    return report


def normal_slices_report(
    normal_probabilities: np.ndarray, blood_threshold: float, min_px: int
) -> dict[str, Any]:
    clear = sum(
        not class_map_from_probabilities(p.astype(np.float32), blood_threshold, min_px).any()
        for p in normal_probabilities
    )
    total = len(normal_probabilities)
    return {
        "slices": total,
        "clear": int(clear),
        "clear_fraction": round(clear / total, 4) if total else None,
        "ci95": wilson_interval(int(clear), total),
    }


def ct_ich_detection_report(
    part: Prepared,
    mask_probabilities: np.ndarray,
    blood_threshold: float,
    min_component_px: int,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Does the outline appear on CT-ICH haemorrhage slices and stay away from normal ones?

    CT-ICH has no masks, but its slice labels show whether the segmentation learnt blood or
    learnt which collection a slice comes from: a slice counts as flagged when any blood
    survives the post-processing; the AUC ranks slices by their largest blood probability.
    """
    labels = np.array([s.any_blood for s in part.samples], np.int32)
    flagged = np.array(
        [
            class_map_from_probabilities(p.astype(np.float32), blood_threshold, min_component_px).any()
            for p in mask_probabilities
        ]
    )
    peak = np.array([float((1.0 - p[..., 0].astype(np.float32)).max()) for p in mask_probabilities])
    report: dict[str, Any] = {
        "slices": len(labels),
        "haemorrhage_slices": int(labels.sum()),
        "flagged_haemorrhage_slices": int(flagged[labels == 1].sum()),
        "flagged_normal_slices": int(flagged[labels == 0].sum()),
    }
    positives = int(labels.sum())
    report["sensitivity"] = round(float(flagged[labels == 1].mean()), 4) if positives else None
    report["sensitivity_ci95"] = wilson_interval(int(flagged[labels == 1].sum()), positives)
    if 0 < positives < len(labels):
        report["auc_peak_blood_probability"] = summarize(labels, peak, 0.5, part.groups, resamples, seed)[
            "metrics"
        ]["auc"]
    return report


def subtype_report(part: Prepared, probabilities: np.ndarray, resamples: int, seed: int) -> dict[str, Any]:
    """Per-subtype AUC with patient-bootstrap intervals, and a flag where positives are few."""
    labels = part.subtypes.astype(int)
    report: dict[str, Any] = {}
    for k, name in enumerate(SUBTYPES):
        positives = int(labels[:, k].sum())
        entry: dict[str, Any] = {"n": len(labels), "n_positive": positives}
        if 0 < positives < len(labels):
            summary = summarize(labels[:, k], probabilities[:, k], 0.5, part.groups, resamples, seed)
            entry["auc"] = summary["metrics"]["auc"]
        else:
            entry["auc"] = {"value": None, "ci95": [None, None]}
        entry["too_few_to_trust"] = positives < FEW_POSITIVES
        report[name] = entry
    return report


def pointing_game(classifier_dir: Path, part: Prepared, tolerance_px: int = 8) -> dict[str, Any]:
    """Grad-CAM of the classifier against true masks: is the heat map's peak in the bleed?"""
    bundle = load_bundle(classifier_dir)
    gradcam = GradCam(bundle.model, bundle.gradcam_layer)
    images = part.images[..., np.newaxis].astype(np.float32) / 255.0
    _, heatmaps = gradcam(images, bundle.threshold, positive=True)
    size = part.images.shape[1]
    strict, tolerant = [], []
    for heatmap, truth in zip(heatmaps, part.masks, strict=True):
        if not truth.any():
            continue
        grid = cv2.resize(heatmap.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        strict.append(pointing_game_hit(grid, truth > 0))
        tolerant.append(pointing_game_hit(grid, truth > 0, tolerance_px))
    return {
        "classifier": f"{bundle.name} {bundle.version}",
        "slices": len(strict),
        "hit_rate": round(float(np.mean(strict)), 4) if strict else None,
        "hit_rate_ci95": wilson_interval(int(np.sum(strict)), len(strict)),
        f"hit_rate_within_{tolerance_px}px": round(float(np.mean(tolerant)), 4) if tolerant else None,
        "tolerance_px_on_model_grid": tolerance_px,
    }


def pointing_game_limitations(result: dict[str, Any]) -> list[str]:
    """The model card's warning when the classifier's heat map seldom points at the bleed."""
    rate = result.get("hit_rate")
    if rate is None or rate >= POINTING_GAME_TARGET:
        return []
    return [
        f"The classifier's Grad-CAM heat map ({result['classifier']}) peaks inside the labelled bleed on "
        f"only {rate:.0%} of held-out bhsd_seg slices ({result['slices']} slices; target "
        f"{POINTING_GAME_TARGET:.0%}): it shows what drove the score, often not the bleed. Use the "
        "outline, not the heat map, to judge where blood is."
    ]
