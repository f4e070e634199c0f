"""A second input channel from Hounsfield units: where tissue is denser than blood.

In a brain window (about 40/80 HU) fresh blood (50-90 HU), calcification (pineal gland, choroid
plexus: 100-400 HU) and bone are all white, so a network reading that window alone cannot tell
a calcified pineal gland from a bleed. Where Hounsfield units are known (a DICOM series, the
``bhsd_seg`` slices, CT-ICH's bone-window export) the density channel says which white pixels
are too dense to be blood: 0 up to :data:`DENSE_FROM_HU`, rising to 1 at :data:`DENSE_FULL_HU`.
Where they are not known (a PNG or JPEG in a brain window) the channel is all zero, which the
network also learns to read (:func:`drop_density` during training).

The channel follows the brain window's geometry exactly (:func:`density_on_grid`): the same head
crop, mask, padding and resizing as :func:`ml.data.preprocessing.preprocess`.
"""

from __future__ import annotations

import numpy as np

from ml.data.preprocessing import PreprocessConfig, PreprocessResult, pad_to_square, preprocess, resize_square

__all__ = [
    "BONE_GREY_AT_ZERO_HU",
    "BONE_GREY_PER_HU",
    "DENSE_FROM_HU",
    "DENSE_FULL_HU",
    "density_from_hounsfield",
    "density_on_grid",
    "hounsfield_from_bone_window",
    "preprocess_with_density",
]

# Denser than any fresh blood, and fully dense where calcification and bone begin.
DENSE_FROM_HU = 110.0
DENSE_FULL_HU = 260.0
# CT-ICH's bone-window JPEGs, fitted against their brain-window twins (40/80 HU) over the
# unsaturated brain pixels of 120 slices: grey = 69.9 + 0.1228 * HU (residual SD 2.6 grey
# levels, about 21 HU), a window of about 2,080 HU around 470 HU.
BONE_GREY_AT_ZERO_HU = 69.9
BONE_GREY_PER_HU = 0.1228


def density_from_hounsfield(hounsfield: np.ndarray) -> np.ndarray:
    """The density map (float32 in [0, 1]) of a slice in Hounsfield units."""
    values = np.asarray(hounsfield, dtype=np.float32)
    return np.clip((values - DENSE_FROM_HU) / (DENSE_FULL_HU - DENSE_FROM_HU), 0.0, 1.0).astype(np.float32)


def hounsfield_from_bone_window(gray: np.ndarray) -> np.ndarray:
    """Hounsfield units of a CT-ICH bone-window image (8-bit grey levels)."""
    return ((np.asarray(gray, dtype=np.float32) - BONE_GREY_AT_ZERO_HU) / BONE_GREY_PER_HU).astype(np.float32)


def density_on_grid(density: np.ndarray, result: PreprocessResult, config: PreprocessConfig) -> np.ndarray:
    """``density`` (on the original image's grid) moved onto the model input's grid exactly as
    :func:`preprocess` moved the image: crop, blank outside the head, pad, resize."""
    geometry = result.geometry
    if density.shape != geometry.original_shape:
        raise ValueError(
            f"The density map is {density.shape[0]}x{density.shape[1]} but its image is "
            f"{geometry.original_shape[0]}x{geometry.original_shape[1]}."
        )
    top, bottom, left, right = geometry.crop_box
    crop = np.asarray(density, dtype=np.float32)[top:bottom, left:right]
    if result.head_mask is not None and config.mask_outside_head:
        crop = np.where(result.head_mask[top:bottom, left:right], crop, 0.0).astype(np.float32)
    square, _ = pad_to_square(crop)
    return np.clip(resize_square(square, config.image_size), 0.0, 1.0)


def preprocess_with_density(
    image: np.ndarray, density: np.ndarray | None, config: PreprocessConfig
) -> np.ndarray:
    """The two-channel model input ``(size, size, 2)``: the preprocessed image and its density
    map on the same grid (all zero when ``density`` is ``None``: Hounsfield units unknown)."""
    result = preprocess(image, config)
    size = config.image_size
    channel = (
        np.zeros((size, size), np.float32) if density is None else density_on_grid(density, result, config)
    )
    return np.stack([result.image[:, :, 0], channel], axis=-1).astype(np.float32)
