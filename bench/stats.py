"""Timing statistics: medians and 95th percentiles of repeated, warmed-up runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["elapsed_ms", "repeat", "summarize"]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, 95th percentile, mean, min, max and count of a list of timings."""
    if not values:
        raise ValueError("Cannot summarise an empty list of timings.")
    array = np.asarray(values, dtype=np.float64)
    return {
        "median": round(float(np.median(array)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "mean": round(float(array.mean()), 3),
        "min": round(float(array.min()), 3),
        "max": round(float(array.max()), 3),
        "n": int(array.size),
    }


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - started) * 1000.0


def repeat(function: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``function``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(elapsed_ms(started))
    return timings
