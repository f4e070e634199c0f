"""Binary classification metrics with patient-level aggregation and bootstrap intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "METRIC_NAMES",
    "binary_metrics",
    "bootstrap_intervals",
    "choose_threshold",
    "json_number",
    "mean_source_auc",
    "patient_level",
    "sensitivity_at_specificity",
    "summarize",
]

METRIC_NAMES = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")


def _as_arrays(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true, dtype=np.int32).ravel()
    probabilities = np.asarray(y_prob, dtype=np.float64).ravel()
    if labels.shape != probabilities.shape:
        raise ValueError(f"Got {labels.size} labels but {probabilities.size} probabilities; they must match.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("Labels must be 0 or 1.")
    return labels, probabilities


def binary_metrics(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray, threshold: float
) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1 (at ``threshold``) and AUC-ROC.

    A metric whose denominator is zero (no positives, say) is NaN rather than a guess.
    """
    labels, probabilities = _as_arrays(y_true, y_prob)
    predicted = probabilities >= threshold
    positives = labels == 1
    tp = float(np.sum(predicted & positives))
    tn = float(np.sum(~predicted & ~positives))
    fp = float(np.sum(predicted & ~positives))
    fn = float(np.sum(~predicted & positives))

    def ratio(numerator: float, denominator: float) -> float:
        return numerator / denominator if denominator > 0 else float("nan")

    precision = ratio(tp, tp + fp)
    sensitivity = ratio(tp, tp + fn)
    both_classes = 0 < positives.sum() < labels.size
    return {
        "accuracy": ratio(tp + tn, labels.size),
        "sensitivity": sensitivity,
        "specificity": ratio(tn, tn + fp),
        "precision": precision,
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "auc": float(roc_auc_score(labels, probabilities)) if both_classes else float("nan"),
    }


def mean_source_auc(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray, sources: Sequence[str]
) -> float:
    """Mean over sources (datasets) of each source's AUC-ROC; sources with one label are skipped.

    Pooled AUC over sources with different shares of positives rewards ranking a whole source
    above another, which is the shortcut to avoid; within each source only the images count.
    NaN when no source has both labels.
    """
    labels, probabilities = _as_arrays(y_true, y_prob)
    names = np.asarray(sources)
    if names.shape != labels.shape:
        raise ValueError("Every sample needs a source.")
    aucs = [
        float(roc_auc_score(labels[names == name], probabilities[names == name]))
        for name in sorted(set(names.tolist()))
        if len(set(labels[names == name].tolist())) == 2
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def confusion_counts(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray, threshold: float
) -> dict[str, int]:
    labels, probabilities = _as_arrays(y_true, y_prob)
    predicted = probabilities >= threshold
    return {
        "tp": int(np.sum(predicted & (labels == 1))),
        "fn": int(np.sum(~predicted & (labels == 1))),
        "tn": int(np.sum(~predicted & (labels == 0))),
        "fp": int(np.sum(predicted & (labels == 0))),
    }


def patient_level(
    y_true: Sequence[int] | np.ndarray,
    y_prob: Sequence[float] | np.ndarray,
    groups: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Aggregate slices to patients: a patient is positive if any slice is, and its
    probability is its most suspicious slice's."""
    labels, probabilities = _as_arrays(y_true, y_prob)
    if len(groups) != labels.size:
        raise ValueError(f"Got {len(groups)} groups for {labels.size} slices.")
    names = sorted(set(groups))
    index = {name: position for position, name in enumerate(names)}
    patient_labels = np.zeros(len(names), dtype=np.int32)
    patient_probs = np.zeros(len(names), dtype=np.float64)
    for label, probability, group in zip(labels, probabilities, groups, strict=True):
        position = index[group]
        patient_labels[position] = max(patient_labels[position], label)
        patient_probs[position] = max(patient_probs[position], probability)
    return patient_labels, patient_probs, names


def choose_threshold(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray, target_sensitivity: float = 0.95
) -> float:
    """The highest threshold whose sensitivity on these data is at least ``target_sensitivity``."""
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}.")
    labels, probabilities = _as_arrays(y_true, y_prob)
    positive = np.sort(probabilities[labels == 1])
    if positive.size == 0:
        raise ValueError("Cannot choose a threshold without positive examples.")
    allowed_misses = int(np.floor(positive.size * (1.0 - target_sensitivity) + 1e-9))
    return float(positive[allowed_misses])


def sensitivity_at_specificity(
    y_true: Sequence[int] | np.ndarray, y_prob: Sequence[float] | np.ndarray, specificity: float = 0.9
) -> float:
    """Best sensitivity reachable on the ROC curve with specificity >= ``specificity``."""
    labels, probabilities = _as_arrays(y_true, y_prob)
    if not 0 < labels.sum() < labels.size:
        return float("nan")
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, probabilities)
    allowed = false_positive_rate <= 1.0 - specificity + 1e-12
    return float(true_positive_rate[allowed].max()) if allowed.any() else 0.0


def bootstrap_intervals(
    y_true: Sequence[int] | np.ndarray,
    y_prob: Sequence[float] | np.ndarray,
    threshold: float,
    groups: Sequence[str] | None = None,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every metric of :func:`binary_metrics`.

    With ``groups``, whole patients are resampled (slices of one patient are correlated,
    so resampling slices would give intervals that are too narrow).
    """
    labels, probabilities = _as_arrays(y_true, y_prob)
    rng = np.random.default_rng(seed)
    if groups is None:
        clusters = [np.array([index]) for index in range(labels.size)]
    else:
        by_group: dict[str, list[int]] = {}
        for index, group in enumerate(groups):
            by_group.setdefault(group, []).append(index)
        clusters = [np.array(members) for members in by_group.values()]
    samples: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for _ in range(num_resamples):
        chosen = rng.integers(0, len(clusters), size=len(clusters))
        indices = np.concatenate([clusters[choice] for choice in chosen])
        values = binary_metrics(labels[indices], probabilities[indices], threshold)
        for name in METRIC_NAMES:
            samples[name].append(values[name])
    alpha = (1.0 - confidence) / 2.0
    intervals = {}
    for name, draws in samples.items():
        finite = np.array([value for value in draws if np.isfinite(value)])
        if finite.size == 0:
            intervals[name] = (float("nan"), float("nan"))
        else:
            low, high = np.quantile(finite, [alpha, 1.0 - alpha])
            intervals[name] = (float(low), float(high))
    return intervals


def summarize(
    y_true: Sequence[int] | np.ndarray,
    y_prob: Sequence[float] | np.ndarray,
    threshold: float,
    groups: Sequence[str] | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Point estimates, 95% intervals and counts, as written to JSON and model cards."""
    labels, probabilities = _as_arrays(y_true, y_prob)
    point = binary_metrics(labels, probabilities, threshold)
    intervals = bootstrap_intervals(labels, probabilities, threshold, groups, num_resamples, seed=seed)
    return {
        "n": int(labels.size),
        "n_positive": int(labels.sum()),
        "threshold": float(threshold),
        "metrics": {
            name: {
                "value": json_number(point[name]),
                "ci95": [json_number(value) for value in intervals[name]],
            }
            for name in METRIC_NAMES
        },
        "sensitivity_at_specificity_0.90": json_number(
            sensitivity_at_specificity(labels, probabilities, 0.9)
        ),
        "confusion": confusion_counts(labels, probabilities, threshold),
    }


def json_number(value: float) -> float | None:
    """JSON has no NaN: write ``null`` where a metric is undefined."""
    return None if not np.isfinite(value) else round(float(value), 4)


def wilson_interval(successes: int, total: int) -> list[float | None]:
    """95% Wilson score interval of a proportion, rounded to 4 places; ``[None, None]`` for none."""
    if total == 0:
        return [None, None]
    z = 1.959964
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]
