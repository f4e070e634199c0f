"""One slice score from the heads of a multitask network.

The network answers three ways about a slice: the slice head's probability, the outline (the
probability of blood at every pixel) and the five subtype heads. A bundle's card names the score
the service reports as the slice's probability (``slice_score``); ``probability`` is the slice
head alone. Each score is a number in [0, 1] per slice, from arrays for a batch of slices:
``probability`` (N,), ``subtypes`` (N x 5) and ``blood`` (N x H x W, any-blood probability).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DEFAULT_SLICE_SCORE", "OUTLINE_PEAK_PIXELS", "SLICE_SCORES", "outline_peak", "slice_score"]

DEFAULT_SLICE_SCORE = "probability"
OUTLINE_PEAK_PIXELS = 16


def outline_peak(blood: np.ndarray) -> np.ndarray:
    """The mean of each slice's ``OUTLINE_PEAK_PIXELS`` highest blood probabilities: a single
    bright pixel counts less than a small outlined region."""
    flat = np.asarray(blood, dtype=np.float32).reshape(len(blood), -1)
    if flat.shape[1] <= OUTLINE_PEAK_PIXELS:
        return flat.mean(axis=1)
    top = np.partition(flat, flat.shape[1] - OUTLINE_PEAK_PIXELS, axis=1)[:, -OUTLINE_PEAK_PIXELS:]
    return top.mean(axis=1)


def _probability(probability: np.ndarray, subtypes: np.ndarray, blood: np.ndarray) -> np.ndarray:
    return probability


def _outline(probability: np.ndarray, subtypes: np.ndarray, blood: np.ndarray) -> np.ndarray:
    return outline_peak(blood)


def _probability_outline(probability: np.ndarray, subtypes: np.ndarray, blood: np.ndarray) -> np.ndarray:
    return (probability + outline_peak(blood)) / 2.0


def _probability_subtypes(probability: np.ndarray, subtypes: np.ndarray, blood: np.ndarray) -> np.ndarray:
    return (probability + subtypes.max(axis=1)) / 2.0


def _all_heads(probability: np.ndarray, subtypes: np.ndarray, blood: np.ndarray) -> np.ndarray:
    return (probability + outline_peak(blood) + subtypes.max(axis=1)) / 3.0


SLICE_SCORES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "probability": _probability,
    "outline_peak": _outline,
    "probability_outline": _probability_outline,
    "probability_subtypes": _probability_subtypes,
    "all_heads": _all_heads,
}


def slice_score(method: str, probability: np.ndarray, subtypes: np.ndarray, blood: np.ndarray) -> np.ndarray:
    """The score ``method`` for every slice of a batch, as float64 in [0, 1].

    Raises:
        ValueError: ``method`` is not one of ``SLICE_SCORES``.
    """
    if method not in SLICE_SCORES:
        raise ValueError(f"Unknown slice score {method!r}; choose one of {sorted(SLICE_SCORES)}.")
    values = SLICE_SCORES[method](
        np.asarray(probability, dtype=np.float64).ravel(),
        np.asarray(subtypes, dtype=np.float64).reshape(len(np.ravel(probability)), -1),
        np.asarray(blood),
    )
    return np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
