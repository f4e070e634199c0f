"""Robustness of predictions to changes that carry no diagnosis: resolution and borders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import keras
import numpy as np

from ml.data.datasets import Sample, load_image
from ml.data.preprocessing import PreprocessConfig, preprocess

__all__ = ["PERTURBATIONS", "add_black_border", "halve_resolution", "robustness_report"]


def halve_resolution(image: np.ndarray) -> np.ndarray:
    """Down-sample by two and back up to the original size (lost detail, same size)."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def add_black_border(image: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Surround the image with a black border of ``fraction`` of its size on each side."""
    height, width = image.shape[:2]
    top, left = int(round(height * fraction)), int(round(width * fraction))
    return cv2.copyMakeBorder(image, top, top, left, left, cv2.BORDER_CONSTANT, value=0)


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "half_resolution": halve_resolution,
    "black_border_10pct": add_black_border,
}


def _batch(images: Sequence[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    return np.stack([preprocess(image, config).image for image in images])


def robustness_report(
    model: keras.Model,
    samples: Sequence[Sample],
    config: PreprocessConfig,
    threshold: float,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Mean absolute change of probability and share of flipped decisions per perturbation."""
    originals = [load_image(sample.path) for sample in samples]
    base = np.asarray(model.predict(_batch(originals, config), batch_size=batch_size, verbose=0)).ravel()
    report: dict[str, Any] = {"n": len(samples)}
    for name, perturb in PERTURBATIONS.items():
        changed = _batch([perturb(image) for image in originals], config)
        probabilities = np.asarray(model.predict(changed, batch_size=batch_size, verbose=0)).ravel()
        difference = np.abs(probabilities - base)
        flips = (probabilities >= threshold) != (base >= threshold)
        report[name] = {
            "mean_abs_change": round(float(difference.mean()), 4),
            "max_abs_change": round(float(difference.max()), 4),
            "flip_rate": round(float(flips.mean()), 4),
        }
    return report
