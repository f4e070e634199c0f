"""The perturbations the robustness check applies: each changes the image as its name says."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml.evaluation.robustness import (
    PERTURBATION_TITLES,
    PERTURBATIONS,
    add_black_border,
    add_corner_text,
    double_size,
    halve_resolution,
    jpeg_compress,
    rotate_quarter_turn,
)


def _head(height: int = 300, width: int = 260, channels: int | None = None) -> np.ndarray:
    image = np.zeros((height, width), np.uint8)
    cv2.ellipse(image, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 110, -1)
    cv2.ellipse(image, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 240, 5)
    image = cv2.GaussianBlur(image, (0, 0), 3)
    return image if channels is None else np.dstack([image] * channels)


def test_halving_keeps_the_size_and_loses_detail() -> None:
    image = _head()
    image[100:102, 100:102] = 255  # a detail smaller than two pixels
    halved = halve_resolution(image)
    assert halved.shape == image.shape and halved.dtype == image.dtype
    assert halved[100:102, 100:102].max() < 255


def test_black_border_adds_a_tenth_on_each_side() -> None:
    image = _head(200, 100)
    framed = add_black_border(image)
    assert framed.shape == (240, 120)
    assert framed[:20].max() == 0 and framed[:, :10].max() == 0
    np.testing.assert_array_equal(framed[20:220, 10:110], image)


@pytest.mark.parametrize("channels", [None, 3])
def test_corner_text_marks_all_four_corners_and_nothing_else(channels: int | None) -> None:
    image = _head(400, 400, channels)
    marked = add_corner_text(image)
    assert marked.shape == image.shape and marked.dtype == image.dtype
    changed = np.any(marked != image, axis=-1) if channels else marked != image
    quarter = 80
    for rows in (slice(0, quarter), slice(-quarter, None)):
        for columns in (slice(0, quarter), slice(-quarter, None)):
            assert changed[rows, columns].sum() > 20
    assert not changed[quarter:-quarter, quarter:-quarter].any()
    assert image.max() < 255 and marked.max() == 255  # white, brighter than anything in the head


def test_corner_text_on_sixteen_bit_images_is_white_in_their_range() -> None:
    image = (_head().astype(np.uint16) * 200).astype(np.uint16)
    assert add_corner_text(image).max() == 65535


def test_double_size_doubles_both_sides() -> None:
    image = _head(120, 90)
    doubled = double_size(image)
    assert doubled.shape == (240, 180) and doubled.dtype == np.uint8
    np.testing.assert_allclose(cv2.resize(doubled, (90, 120), interpolation=cv2.INTER_AREA), image, atol=6)


@pytest.mark.parametrize("channels", [None, 3])
def test_jpeg_compression_is_lossy_but_close(channels: int | None) -> None:
    rng = np.random.default_rng(0)
    image = _head(channels=channels)
    image = np.clip(image.astype(int) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
    compressed = jpeg_compress(image)
    assert compressed.shape == image.shape and compressed.dtype == np.uint8
    difference = np.abs(compressed.astype(int) - image.astype(int))
    assert 0 < difference.mean() < 8


def test_jpeg_leaves_deeper_images_alone() -> None:
    image = _head().astype(np.uint16) * 100
    assert jpeg_compress(image) is image


def test_the_check_applies_every_perturbation_and_names_each_in_words() -> None:
    assert set(PERTURBATION_TITLES) == set(PERTURBATIONS)
    assert set(PERTURBATIONS) == {
        "half_resolution",
        "black_border_10pct",
        "corner_text",
        "double_size",
        "jpeg_quality_75",
        "rotate_90",
    }


def test_a_quarter_turn_turns_the_image_clockwise() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    image[0, 0] = 255  # top left
    turned = rotate_quarter_turn(image)
    assert turned.shape == (6, 4, 3)
    assert turned[0, -1].tolist() == [255, 255, 255]  # now top right
    assert rotate_quarter_turn(
        rotate_quarter_turn(rotate_quarter_turn(rotate_quarter_turn(image)))
    ).tolist() == (image.tolist())
