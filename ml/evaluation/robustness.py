"""Robustness of predictions to changes that carry no diagnosis.

Each perturbation mimics how the same slice may reach the service from another hospital or
export: lower resolution, a black frame, burnt-in annotation text in the corners, a larger
canvas (twice the pixel size), lossy JPEG compression, and a quarter turn (collections and
viewers do not agree on which way is up). None of them changes what the slice shows, so none
should change the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import keras
import numpy as np

from ml.data.datasets import Sample, load_image
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.model_io import predict_probabilities

__all__ = [
    "PERTURBATIONS",
    "PERTURBATION_TITLES",
    "add_black_border",
    "add_corner_text",
    "double_size",
    "halve_resolution",
    "jpeg_compress",
    "robustness_report",
    "rotate_quarter_turn",
]


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


# Annotation as scanners and viewers burn it in: side markers, window, slice position, a date.
CORNER_TEXT = ("R", "L", "W 80 L 40", "SL 5.0 mm")


def add_corner_text(image: np.ndarray) -> np.ndarray:
    """Write white annotation text into the four corners, about 4% of the image high.

    The text is drawn on an 8-bit mask and blended in at the image's own maximum (255, 65535 or
    1.0), so any depth and channel count works."""
    height, width = image.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    scale = max(0.3, 0.04 * height / 22.0)
    thickness = max(1, round(scale * 1.5))
    margin = max(2, round(0.02 * min(height, width)))
    for index, text in enumerate(CORNER_TEXT):
        (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        x = margin if index % 2 == 0 else width - margin - text_width
        y = margin + text_height if index < 2 else height - margin
        cv2.putText(mask, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
    white = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
    alpha = mask.astype(np.float64) / 255.0
    if image.ndim == 3:
        alpha = alpha[..., None]
    blended = image.astype(np.float64) * (1.0 - alpha) + white * alpha
    return np.round(blended).astype(image.dtype) if image.dtype.kind in "ui" else blended.astype(image.dtype)


def double_size(image: np.ndarray) -> np.ndarray:
    """Up-sample to twice the width and height (a larger matrix or export, same anatomy)."""
    height, width = image.shape[:2]
    return cv2.resize(image, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)


def jpeg_compress(image: np.ndarray, quality: int = 75) -> np.ndarray:
    """Save as JPEG at ``quality`` and read it back (8-bit images only; others are returned as they are)."""
    if image.dtype != np.uint8:
        return image
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed.")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError("JPEG decoding failed.")
    # A single-channel image comes back without its channel axis.
    return np.asarray(decoded).reshape(image.shape)


def rotate_quarter_turn(image: np.ndarray) -> np.ndarray:
    """Turn the image a quarter turn clockwise (height and width swap)."""
    return np.ascontiguousarray(np.rot90(image, k=-1, axes=(0, 1)))


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "half_resolution": halve_resolution,
    "black_border_10pct": add_black_border,
    "corner_text": add_corner_text,
    "double_size": double_size,
    "jpeg_quality_75": jpeg_compress,
    "rotate_90": rotate_quarter_turn,
}
# Each perturbation in words, for readers of the model card.
PERTURBATION_TITLES: dict[str, str] = {
    "half_resolution": "Half the resolution (down and up again)",
    "black_border_10pct": "A 10% black border",
    "corner_text": "Annotation text in the corners",
    "double_size": "Twice the pixel size",
    "jpeg_quality_75": "JPEG compression (quality 75)",
    "rotate_90": "A quarter turn",
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
    """Mean absolute change of probability and share of flipped decisions per perturbation, for a
    classifier or the slice head of a multitask network."""
    originals = [load_image(sample.path) for sample in samples]
    base = predict_probabilities(model, _batch(originals, config), batch_size)
    report: dict[str, Any] = {"n": len(samples)}
    for name, perturb in PERTURBATIONS.items():
        changed = _batch([perturb(image) for image in originals], config)
        probabilities = predict_probabilities(model, changed, batch_size)
        difference = np.abs(probabilities - base)
        flips = (probabilities >= threshold) != (base >= threshold)
        report[name] = {
            "mean_abs_change": round(float(difference.mean()), 4),
            "max_abs_change": round(float(difference.max()), 4),
            "flip_rate": round(float(flips.mean()), 4),
        }
    return report
