"""A second study criterion: the blood a multitask network outlines across a series.

A study is flagged when its aggregated slice probability reaches the study threshold, or when
its outlined blood, summed over the series, reaches ``study_outline_px``: pixels of the outline
after the card's post-processing (``blood_threshold``, ``min_component_px``), counted on the
model's grid of the head, so the count does not depend on the uploaded image's size. The outline
finds small bleeds that the slice head scores low; the probability keeps normal studies clear
where the outline marks a little tissue.

Both thresholds are chosen together on validation patients (:func:`choose_outline_rule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ml.evaluation.metrics import binary_metrics, json_number
from ml.evaluation.segmentation import remove_small_components

__all__ = [
    "PROBABILITY_GAP",
    "VOLUME_RATIO",
    "choose_outline_rule",
    "flagged_by",
    "grid_blood_px",
    "series_sums",
    "spaced_midpoints",
    "study_flags",
]

# Candidate thresholds lie between validation patients at least this far apart.
PROBABILITY_GAP = 0.02
VOLUME_RATIO = 1.25


def grid_blood_px(blood: np.ndarray, blood_threshold: float, min_component_px: int) -> np.ndarray:
    """Outlined pixels of each slice (``N x S x S`` any-blood probabilities on the model grid),
    after the same post-processing as the served outline."""
    return np.array(
        [
            int(remove_small_components(np.asarray(b, np.float32) >= blood_threshold, min_component_px).sum())
            for b in blood
        ],
        dtype=np.int64,
    )


def series_sums(values: Sequence[float] | np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """Per-patient sums of per-slice values, patients in sorted order (as
    ``ml.evaluation.study.compare_aggregations`` orders them)."""
    array = np.asarray(values, dtype=np.float64)
    names = sorted(set(groups))
    index = {name: i for i, name in enumerate(names)}
    sums = np.zeros(len(names))
    for value, group in zip(array, groups, strict=True):
        sums[index[group]] += value
    return sums


def spaced_midpoints(
    values: Sequence[float] | np.ndarray, gap: float | None = None, ratio: float | None = None
) -> list[float]:
    """Midpoints between neighbouring distinct values that lie at least ``gap`` apart (or, with
    ``ratio``, whose larger is at least ``ratio`` times the smaller; the midpoint is then their
    geometric mean), plus one threshold below all values and one above."""
    ordered = np.unique(np.asarray(values, dtype=np.float64))
    if ordered.size == 0:
        return []
    points = [float(ordered[0]) / 2.0 if ratio else float(ordered[0]) - 1.0, float(ordered[-1]) * 2.0 + 1.0]
    for low, high in zip(ordered[:-1], ordered[1:], strict=True):
        if ratio is not None:
            if high >= ratio * max(low, 1e-9):
                points.append(float(np.sqrt(max(low, 1.0) * high)))
        elif gap is not None and high - low >= gap:
            points.append(float((low + high) / 2.0))
    return sorted(points)


def flagged_by(
    probability: float, outlined_px: float | None, threshold: float, outline_px: float | None
) -> list[Literal["probability", "outline"]]:
    """The criteria that flag one study: its aggregated ``probability`` against ``threshold``, and
    its ``outlined_px`` against the rule's ``outline_px`` (neither applies when it is ``None``:
    no outline criterion, or a study analysed without outlines)."""
    criteria: list[Literal["probability", "outline"]] = []
    if probability >= threshold:
        criteria.append("probability")
    if outline_px is not None and outlined_px is not None and outlined_px >= outline_px:
        criteria.append("outline")
    return criteria


def study_flags(
    scores: np.ndarray, volumes: np.ndarray, threshold: float, outline_px: float | None
) -> np.ndarray:
    """Which studies the rule flags (:func:`flagged_by` for each)."""
    return np.array(
        [
            bool(flagged_by(float(s), float(v), threshold, outline_px))
            for s, v in zip(scores, volumes, strict=True)
        ],
        dtype=bool,
    )


def choose_outline_rule(
    labels: np.ndarray,
    scores: np.ndarray,
    volumes: np.ndarray,
    normal_of_interest: np.ndarray,
    sensitivity: float,
) -> dict[str, Any] | None:
    """The ``(threshold, outline_px)`` pair with patient sensitivity >= ``sensitivity`` that clears
    the most patients marked in ``normal_of_interest``, then the lowest thresholds; ``None`` when
    no pair reaches the sensitivity."""
    labels = np.asarray(labels).astype(int)
    positives = labels == 1
    best: tuple[tuple[int, float, float], dict[str, Any]] | None = None
    for outline_px in spaced_midpoints(volumes, ratio=VOLUME_RATIO):
        for threshold in spaced_midpoints(scores, gap=PROBABILITY_GAP):
            flagged = study_flags(scores, volumes, threshold, outline_px)
            reached = float(np.mean(flagged[positives])) if positives.any() else 0.0
            if reached < sensitivity:
                continue
            cleared = int(np.sum(~flagged & normal_of_interest))
            key = (cleared, -threshold, -outline_px)
            if best is None or key > best[0]:
                best = (
                    key,
                    {
                        "threshold": round(float(threshold), 6),
                        "outline_px": int(round(outline_px)),
                        "sensitivity": json_number(reached),
                        "ct_ich_normal_cleared": cleared,
                        "ct_ich_normal_patients": int(np.sum(normal_of_interest)),
                        "patient_auc": json_number(binary_metrics(labels, scores, threshold)["auc"]),
                    },
                )
    return None if best is None else best[1]
