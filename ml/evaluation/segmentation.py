"""Segmentation metrics: Dice and IoU, lesion detection, the pointing game, and volumes.

All functions take class-index masks (0 background, 1..5 the subtypes of
``ml.data.segmentation.SUBTYPES``) or boolean masks, as NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

# Share of slices on which the classifier's heat map should peak inside the labelled bleed.
POINTING_GAME_TARGET = 0.8

__all__ = [
    "POINTING_GAME_TARGET",
    "abc2_volume_ml",
    "bootstrap_pooled",
    "dice",
    "iou",
    "lesion_detection",
    "overlap_counts",
    "pointing_game_hit",
    "remove_small_components",
    "voxel_volume_ml",
]


def overlap_counts(prediction: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """``(intersection, predicted, true)`` pixel counts of two boolean masks."""
    prediction = np.asarray(prediction, bool)
    truth = np.asarray(truth, bool)
    if prediction.shape != truth.shape:
        raise ValueError(f"Shapes differ: {prediction.shape} vs {truth.shape}.")
    return int(np.logical_and(prediction, truth).sum()), int(prediction.sum()), int(truth.sum())


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|); NaN when both masks are empty (undefined)."""
    intersection, predicted, true = overlap_counts(prediction, truth)
    if predicted + true == 0:
        return math.nan
    return 2.0 * intersection / (predicted + true)


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B|; NaN when both masks are empty."""
    intersection, predicted, true = overlap_counts(prediction, truth)
    union = predicted + true - intersection
    if union == 0:
        return math.nan
    return intersection / union


def bootstrap_pooled(
    counts: Sequence[tuple[int, int, int]],
    groups: Sequence[str],
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Pooled Dice and IoU over slices (sums of counts), with 95% intervals from a bootstrap
    that resamples groups (scan volumes), so adjacent slices of one scan move together."""
    array = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    if len(array) != len(groups):
        raise ValueError("One group per slice is needed.")

    def pooled(rows: np.ndarray) -> tuple[float, float]:
        intersection, predicted, true = rows.sum(axis=0)
        union = predicted + true - intersection
        dice_value = 2 * intersection / (predicted + true) if predicted + true > 0 else math.nan
        iou_value = intersection / union if union > 0 else math.nan
        return dice_value, iou_value

    point = pooled(array)
    unique = sorted(set(groups))
    members = {group: [i for i, g in enumerate(groups) if g == group] for group in unique}
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num_resamples):
        chosen = rng.choice(len(unique), size=len(unique), replace=True)
        rows = np.concatenate([array[members[unique[i]]] for i in chosen]) if unique else array
        samples.append(pooled(rows))
    values = np.asarray(samples, dtype=np.float64)

    def interval(column: int) -> list[float | None]:
        finite = values[:, column][np.isfinite(values[:, column])]
        if finite.size == 0:
            return [None, None]
        low, high = np.percentile(finite, [2.5, 97.5])
        return [round(float(low), 4), round(float(high), 4)]

    def clean(value: float) -> float | None:
        return None if not np.isfinite(value) else round(float(value), 4)

    return {
        "dice": {"value": clean(point[0]), "ci95": interval(0)},
        "iou": {"value": clean(point[1]), "ci95": interval(1)},
        "slices": len(array),
        "volumes": len(unique),
    }


def remove_small_components(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Boolean mask without connected components smaller than ``min_pixels``."""
    mask = np.asarray(mask, bool)
    if min_pixels <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels]


def lesion_detection(prediction: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Lesions (8-connected components of ``truth``) found by ``prediction``.

    A true lesion counts as found when any predicted pixel overlaps it; a predicted
    component that touches no true lesion is a false detection.
    """
    prediction = np.asarray(prediction, bool)
    truth = np.asarray(truth, bool)
    true_count, true_labels = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    found = len(set(np.unique(true_labels[prediction]).tolist()) - {0})
    predicted_count, predicted_labels = cv2.connectedComponents(prediction.astype(np.uint8), connectivity=8)
    touching = set(np.unique(predicted_labels[truth]).tolist()) - {0}
    return {
        "lesions": true_count - 1,
        "found": found,
        "predicted_components": predicted_count - 1,
        "false_components": predicted_count - 1 - len(touching),
    }


def pointing_game_hit(heatmap: np.ndarray, truth: np.ndarray, tolerance_px: int = 0) -> bool:
    """Does the heat map's maximum fall inside the true region (or within ``tolerance_px``)?

    Ties (a flat maximum) count as a hit only when every maximal pixel is inside.
    """
    heatmap = np.asarray(heatmap, np.float32)
    truth = np.asarray(truth, bool)
    if heatmap.shape != truth.shape:
        raise ValueError(f"Shapes differ: {heatmap.shape} vs {truth.shape}.")
    if not truth.any():
        raise ValueError("The pointing game needs a non-empty true region.")
    region = truth
    if tolerance_px > 0:
        size = 2 * tolerance_px + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        region = cv2.dilate(truth.astype(np.uint8), kernel).astype(bool)
    peak = heatmap >= heatmap.max()
    return bool(region[peak].all())


def voxel_volume_ml(
    masks: Sequence[np.ndarray], pixel_spacing_mm: tuple[float, float], slice_spacing_mm: float
) -> float:
    """Volume of the ``True`` voxels of a stack of slice masks, in millilitres."""
    voxels = sum(int(np.asarray(mask, bool).sum()) for mask in masks)
    voxel_mm3 = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1]) * float(slice_spacing_mm)
    return voxels * voxel_mm3 / 1000.0


def _diameters_mm(mask: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """Largest diameter A of the mask's largest component and the largest width B
    perpendicular to it, in millimetres."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0.0, 0.0
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    rows, cols = np.nonzero(labels == largest)
    # Pixel centres in millimetres (row spacing first, as DICOM PixelSpacing is written).
    points = np.stack([cols * pixel_spacing_mm[1], rows * pixel_spacing_mm[0]], axis=1).astype(np.float64)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    pixel = float(np.mean(pixel_spacing_mm))
    if len(hull) < 2:
        return pixel, pixel
    differences = hull[:, None, :] - hull[None, :, :]
    distances = np.hypot(differences[..., 0], differences[..., 1])
    first, second = np.unravel_index(int(np.argmax(distances)), distances.shape)
    axis = hull[second] - hull[first]
    length = float(np.hypot(*axis))
    normal = np.array([-axis[1], axis[0]]) / max(length, 1e-9)
    widths = points @ normal
    # Pixel counts measure extents between pixel centres; one pixel is added to each.
    return length + pixel, float(widths.max() - widths.min()) + pixel


def abc2_volume_ml(
    masks: Sequence[np.ndarray], pixel_spacing_mm: tuple[float, float], slice_spacing_mm: float
) -> dict[str, float]:
    """The bedside ABC/2 estimate of a haemorrhage's volume (Kothari et al., Stroke 1996).

    A: largest diameter on the slice with the largest bleed area; B: largest diameter
    perpendicular to A on that slice; C: slices with blood times the slice spacing, where a
    slice counts 1 if its area is at least 75% of the largest, 0.5 if at least 25%, else 0.
    """
    areas = np.array([int(np.asarray(mask, bool).sum()) for mask in masks], dtype=np.float64)
    if areas.size == 0 or areas.max() == 0:
        return {"volume_ml": 0.0, "a_mm": 0.0, "b_mm": 0.0, "c_mm": 0.0}
    biggest = int(np.argmax(areas))
    a_mm, b_mm = _diameters_mm(np.asarray(masks[biggest], bool), pixel_spacing_mm)
    ratios = areas / areas.max()
    weights = np.where(ratios >= 0.75, 1.0, np.where(ratios >= 0.25, 0.5, 0.0))
    c_mm = float(weights.sum()) * float(slice_spacing_mm)
    return {
        "volume_ml": round(a_mm * b_mm * c_mm / 2.0 / 1000.0, 3),
        "a_mm": round(a_mm, 1),
        "b_mm": round(b_mm, 1),
        "c_mm": round(c_mm, 1),
    }
