"""Study-level decisions from slice probabilities.

A head CT series has 30 to 300 slices; the study is positive when haemorrhage is seen on any
of them. Aggregations are compared on validation patients and the chosen one is written in the
model card (``study_aggregation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["AGGREGATIONS", "DEFAULT_AGGREGATION", "aggregate", "compare_aggregations", "study_rule"]

DEFAULT_AGGREGATION = "max"


def _max(probabilities: np.ndarray) -> float:
    return float(probabilities.max())


def _top3_mean(probabilities: np.ndarray) -> float:
    # Needs agreement of neighbouring slices: a single noisy slice counts less.
    top = np.sort(probabilities)[-3:]
    return float(top.mean())


def _noisy_or(probabilities: np.ndarray) -> float:
    # Probability that at least one slice is positive if slices were independent.
    return float(1.0 - np.exp(np.sum(np.log1p(-np.clip(probabilities, 0.0, 1.0 - 1e-7)))))


def _neighbour_pair(probabilities: np.ndarray) -> float:
    # A bleed seen on two adjacent slices: the highest, over neighbouring pairs in series order,
    # of the lower probability of the two. A single slice counts on its own.
    if probabilities.size == 1:
        return float(probabilities[0])
    return float(np.minimum(probabilities[:-1], probabilities[1:]).max())


AGGREGATIONS: dict[str, Callable[[np.ndarray], float]] = {
    "max": _max,
    "top3_mean": _top3_mean,
    "noisy_or": _noisy_or,
    "neighbour_pair": _neighbour_pair,
}


def study_rule(card: Mapping[str, Any], slice_threshold: float) -> tuple[str, float, list[str]]:
    """How a model card decides a study: ``(aggregation, threshold, problems)``.

    The card's ``study_aggregation`` and ``study_threshold``; a missing one falls back to the
    maximum over slices against the slice threshold, and an unusable one too, with a line in
    ``problems`` saying what was wrong (for a log).
    """
    problems: list[str] = []
    aggregation = str(card.get("study_aggregation") or DEFAULT_AGGREGATION)
    if aggregation not in AGGREGATIONS:
        problems.append(f"unknown study_aggregation {aggregation!r}; using {DEFAULT_AGGREGATION!r}")
        aggregation = DEFAULT_AGGREGATION
    threshold = card.get("study_threshold")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0
    ):
        problems.append(f"study_threshold {threshold!r} is not a number in [0, 1]; using the slice threshold")
        threshold = None
    return aggregation, float(slice_threshold if threshold is None else threshold), problems


def aggregate(probabilities: Sequence[float] | np.ndarray, method: str = "max") -> float:
    """One study probability from its slices' probabilities, in series order."""
    if method not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {method!r}; choose one of {sorted(AGGREGATIONS)}.")
    values = np.asarray(probabilities, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("A study needs at least one slice probability.")
    return AGGREGATIONS[method](values)


def compare_aggregations(
    labels: Sequence[int] | np.ndarray, probabilities: Sequence[float] | np.ndarray, groups: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Patient labels and study probabilities under every aggregation, for model selection."""
    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        by_group.setdefault(group, []).append(index)
    label_array = np.asarray(labels)
    prob_array = np.asarray(probabilities, dtype=np.float64)
    names = sorted(by_group)
    patient_labels = np.array([int(label_array[by_group[name]].max()) for name in names])
    results = {}
    for method in AGGREGATIONS:
        scores = np.array([aggregate(prob_array[by_group[name]], method) for name in names])
        results[method] = {"labels": patient_labels, "probabilities": scores}
    return results
