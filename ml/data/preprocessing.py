"""Image preprocessing shared by training, evaluation and the service.

Every image, whatever its source (PNG figure, JPEG slice, windowed DICOM), goes through
:func:`preprocess` before it reaches a model. The function removes what differs between
hospitals and publishers but says nothing about blood: image size, borders, panel letters
outside the head, and the display window's brightness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "Geometry",
    "PreprocessConfig",
    "PreprocessResult",
    "apply_clahe",
    "background_level",
    "crop_to_head",
    "head_mask",
    "normalize_intensity",
    "pad_to_square",
    "preprocess",
    "resize_square",
    "to_grayscale",
]


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :func:`preprocess`; stored in every model card.

    Attributes:
        image_size: side of the square model input, in pixels.
        crop_to_head: crop to the largest bright connected component (the head).
        head_threshold: intensity (0..1) above which a pixel can belong to the head.
        crop_margin: margin kept around the head, as a fraction of its larger side.
        mask_outside_head: set pixels outside the head component to zero (removes text and
            tables that fall inside the head's bounding box).
        clahe: apply contrast-limited adaptive histogram equalisation.
        clahe_clip_limit: CLAHE clip limit.
        clahe_tile_grid: CLAHE tiles per side.
        low_percentile: intensity percentile inside the head mapped to 0.
        high_percentile: intensity percentile inside the head mapped to 1.
    """

    image_size: int = 224
    crop_to_head: bool = True
    head_threshold: float = 0.08
    crop_margin: float = 0.03
    mask_outside_head: bool = True
    clahe: bool = False
    clahe_clip_limit: float = 2.0
    clahe_tile_grid: int = 8
    low_percentile: float = 0.5
    high_percentile: float = 99.5

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}.")
        if not 0.0 <= self.head_threshold < 1.0:
            raise ValueError(f"head_threshold must lie in [0, 1), got {self.head_threshold}.")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError(
                "Percentiles must satisfy 0 <= low_percentile < high_percentile <= 100, got "
                f"{self.low_percentile} and {self.high_percentile}."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass(frozen=True)
class Geometry:
    """Where the model input came from in the original image.

    ``crop_box`` is ``(top, bottom, left, right)`` in original pixels; ``pad`` is
    ``(top, left)`` padding added to the crop to make it square of side ``square_side``.
    """

    original_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    pad: tuple[int, int]
    square_side: int

    def to_original(self, input_map: np.ndarray) -> np.ndarray:
        """Map a 2-D array on the model-input grid back onto the original image grid.

        Pixels outside the crop are zero. Used to place Grad-CAM heat maps and masks.
        """
        if input_map.ndim != 2:
            raise ValueError(f"Expected a 2-D map, got shape {input_map.shape}.")
        top, bottom, left, right = self.crop_box
        height, width = bottom - top, right - left
        square = cv2.resize(
            input_map.astype(np.float32),
            (self.square_side, self.square_side),
            interpolation=cv2.INTER_LINEAR,
        )
        pad_top, pad_left = self.pad
        crop = square[pad_top : pad_top + height, pad_left : pad_left + width]
        full = np.zeros(self.original_shape, dtype=np.float32)
        full[top:bottom, left:right] = crop
        return full


@dataclass(frozen=True)
class PreprocessResult:
    """Model input ``image`` (H x W x 1, float32 in [0, 1]) and its ``geometry``.

    ``head_mask`` is the head on the whole original image (:func:`head_mask` at the config's
    ``head_threshold``), or ``None`` when no head was found or cropping to the head is off.
    """

    image: np.ndarray
    geometry: Geometry
    grayscale: np.ndarray = field(repr=False)
    head_mask: np.ndarray | None = field(default=None, repr=False)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Convert any decoded image to a 2-D float32 array in [0, 1].

    Accepts 2-D arrays and 3-D arrays with 1, 3 or 4 channels (alpha is dropped; colour is
    averaged with luminance weights), of dtype uint8, uint16 or float.
    """
    array = np.asarray(image)
    if array.ndim == 3:
        channels = array.shape[2]
        if channels == 1:
            array = array[:, :, 0]
        elif channels in (3, 4):
            colour = array[:, :, :3].astype(np.float32)
            # OpenCV decodes to BGR; CT images are grey so channel order rarely matters,
            # but luminance weights keep a colour photograph's brightness plausible.
            array = colour @ np.array([0.114, 0.587, 0.299], dtype=np.float32)
        else:
            raise ValueError(f"Expected 1, 3 or 4 channels, got {channels} (shape {array.shape}).")
    elif array.ndim != 2:
        raise ValueError(f"Expected a 2-D or 3-D image array, got shape {array.shape}.")
    if array.size == 0:
        raise ValueError("The image has no pixels.")

    source_dtype = np.asarray(image).dtype
    gray = array.astype(np.float32)
    if source_dtype == np.uint8:
        gray /= 255.0
    elif np.issubdtype(source_dtype, np.integer):
        # 16-bit images use an unknown part of their range: stretch what is there.
        low, high = float(gray.min()), float(gray.max())
        gray = (gray - low) / (high - low) if high > low else np.zeros_like(gray)
    else:
        finite = np.isfinite(gray)
        if not finite.all():
            gray = np.where(finite, gray, 0.0)
        low, high = float(gray.min()), float(gray.max())
        if low < 0.0 or high > 1.0:
            gray = (gray - low) / (high - low) if high > low else np.zeros_like(gray)
    return np.clip(gray, 0.0, 1.0).astype(np.float32)


def background_level(gray: np.ndarray, band: float = 0.1) -> float:
    """Grey level of the image's surroundings: a low percentile of its outer band.

    Figures exported from papers often sit on grey rather than black; the head threshold is
    raised above this level so that such a background does not join the head. A low
    percentile of a band (not the outermost pixels) ignores thin frames and corner text.
    """
    height, width = gray.shape
    rows, cols = max(1, int(height * band)), max(1, int(width * band))
    outer = np.concatenate(
        [gray[:rows].ravel(), gray[-rows:].ravel(), gray[:, :cols].ravel(), gray[:, -cols:].ravel()]
    )
    return float(np.percentile(outer, 10))


def head_mask(gray: np.ndarray, threshold: float = 0.08) -> np.ndarray | None:
    """Boolean mask of the head: the largest solid bright connected component, holes filled.

    Pixels count as head when brighter than ``threshold`` and clearly brighter than the
    background (:func:`background_level`). The head is the component with the most pixels
    deep inside it, so that a thin structure (the curved line of a scanner
    table, a frame) is never taken for the head, even where it outnumbers a small head in
    pixels. Returns ``None`` when nothing plausible is found (no solid component, or one of
    less than 2% of the image), in which case callers keep the whole image.
    """
    level = max(threshold, background_level(gray) + 0.06)
    # An opening detaches letters and thin lines that touch the skull; the kernel scales
    # with the image so that it means the same anatomy at every resolution.
    kernel_size = max(3, int(round(min(gray.shape) * 0.01)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    binary = cv2.morphologyEx((gray > level).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return None
    # The core of a component is what lies deeper inside it than 2.5% of the image side (an
    # erosion by a disc, read off the distance transform): lines up to twice that thick (a
    # table's arc is 5 to 17 pixels thick at 512) have no core, any head piece has one.
    depth = cv2.distanceTransform(binary, cv2.DIST_L2, 3)
    core = depth > 0.025 * min(gray.shape)
    core_areas = np.bincount(labels[core], minlength=count)[1:]
    if core_areas.max() == 0:
        return None
    largest = 1 + int(np.argmax(core_areas))
    if stats[largest, cv2.CC_STAT_AREA] < 0.02 * gray.size:
        return None
    component = (labels == largest).astype(np.uint8)
    # Fill the interior (dark ventricles and blood inside the skull belong to the head).
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def crop_to_head(
    gray: np.ndarray,
    threshold: float = 0.08,
    margin: float = 0.03,
    mask_outside: bool = True,
) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray | None]:
    """Crop ``gray`` to the head's bounding box plus ``margin``.

    Returns the crop, its box ``(top, bottom, left, right)`` and the head mask of the crop
    (``None`` when no head was found and the whole image is kept).
    """
    return _crop_to_mask(gray, head_mask(gray, threshold), margin, mask_outside)


def _crop_to_mask(
    gray: np.ndarray, mask: np.ndarray | None, margin: float, mask_outside: bool
) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray | None]:
    """:func:`crop_to_head` with the head mask of the whole image already computed."""
    height, width = gray.shape
    if mask is None:
        return gray, (0, height, 0, width), None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    pad = int(round(margin * max(rows[-1] - rows[0], cols[-1] - cols[0])))
    top, bottom = max(0, rows[0] - pad), min(height, rows[-1] + 1 + pad)
    left, right = max(0, cols[0] - pad), min(width, cols[-1] + 1 + pad)
    crop = gray[top:bottom, left:right]
    crop_mask = mask[top:bottom, left:right]
    if mask_outside:
        crop = np.where(crop_mask, crop, 0.0).astype(np.float32)
    return crop, (int(top), int(bottom), int(left), int(right)), crop_mask


def pad_to_square(gray: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad with zeros (air) to a centred square; returns the square and ``(top, left)``."""
    height, width = gray.shape
    side = max(height, width)
    top = (side - height) // 2
    left = (side - width) // 2
    square = np.zeros((side, side), dtype=np.float32)
    square[top : top + height, left : left + width] = gray
    return square, (top, left)


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to ``size`` x ``size`` (area averaging when shrinking)."""
    interpolation = cv2.INTER_AREA if gray.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interpolation).astype(np.float32)


def normalize_intensity(
    gray: np.ndarray,
    mask: np.ndarray | None = None,
    low_percentile: float = 0.5,
    high_percentile: float = 99.5,
) -> np.ndarray:
    """Rescale intensities so the head's percentiles map to [0, 1], then clip.

    Display windows differ between sources; this keeps brain tissue at a similar grey
    level whatever window the image was exported with.
    """
    values = gray[mask] if mask is not None and mask.any() else gray.ravel()
    low, high = np.percentile(values, [low_percentile, high_percentile])
    if high - low < 1e-6:
        return np.clip(gray, 0.0, 1.0).astype(np.float32)
    return np.clip((gray - low) / (high - low), 0.0, 1.0).astype(np.float32)


def apply_clahe(gray: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation on a [0, 1] image."""
    as_uint8 = np.round(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid))
    return (clahe.apply(as_uint8).astype(np.float32) / 255.0).astype(np.float32)


def preprocess(image: np.ndarray, config: PreprocessConfig | None = None) -> PreprocessResult:
    """Turn a decoded image into the model input.

    Steps: greyscale -> crop to the head (and blank what lies outside it) -> intensity
    normalisation on head pixels -> optional CLAHE -> pad to square -> resize.

    Args:
        image: decoded pixels (2-D, or 3-D with 1, 3 or 4 channels).
        config: preprocessing parameters; the model card's values when serving.

    Returns:
        The model input of shape ``(image_size, image_size, 1)`` and its geometry.
    """
    config = config or PreprocessConfig()
    gray = to_grayscale(image)
    original_shape = (int(gray.shape[0]), int(gray.shape[1]))
    if config.crop_to_head:
        full_mask = head_mask(gray, config.head_threshold)
        crop, box, mask = _crop_to_mask(gray, full_mask, config.crop_margin, config.mask_outside_head)
    else:
        full_mask = None
        crop, box, mask = gray, (0, original_shape[0], 0, original_shape[1]), None
    crop = normalize_intensity(crop, mask, config.low_percentile, config.high_percentile)
    if mask is not None and config.mask_outside_head:
        crop = np.where(mask, crop, 0.0).astype(np.float32)
    if config.clahe:
        crop = apply_clahe(crop, config.clahe_clip_limit, config.clahe_tile_grid)
    square, pad = pad_to_square(crop)
    resized = resize_square(square, config.image_size)
    geometry = Geometry(original_shape=original_shape, crop_box=box, pad=pad, square_side=square.shape[0])
    # Area interpolation can overshoot 1.0 by a rounding error; the model input stays in [0, 1].
    resized = np.clip(resized, 0.0, 1.0)
    return PreprocessResult(
        image=resized[:, :, np.newaxis], geometry=geometry, grayscale=gray, head_mask=full_mask
    )
