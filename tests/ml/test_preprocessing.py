"""Preprocessing: each transform on its own, then the whole pipeline and its invariances."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.data.preprocessing import (
    Geometry,
    PreprocessConfig,
    apply_clahe,
    crop_to_head,
    head_mask,
    normalize_intensity,
    pad_to_square,
    preprocess,
    resize_square,
    to_grayscale,
)

BRAIN = 0.45
SKULL = 1.0
BLEED = 0.8
VENTRICLE = 0.12


@dataclass(frozen=True)
class SyntheticHead:
    """A synthetic slice and where its parts are, in its own pixel grid."""

    image: np.ndarray
    head: np.ndarray
    bleed_centre: tuple[int, int]


def draw_head(
    shape: tuple[int, int] = (320, 400),
    centre: tuple[int, int] = (160, 200),
    axes: tuple[int, int] = (120, 140),
    bleed: bool = True,
    seed: int = 0,
) -> SyntheticHead:
    """Draw a head: bright skull ring, grey brain with texture, a dark ventricle, a bright bleed.

    Args:
        shape: ``(height, width)`` of the canvas.
        centre: ``(row, column)`` of the head.
        axes: horizontal and vertical semi-axes of the skull ellipse.
        bleed: draw the bright bleed.
        seed: seed of the brain texture.
    """
    row, col = centre
    half_width, half_height = axes
    image = np.zeros(shape, dtype=np.float32)
    head = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(head, (col, row), (half_width, half_height), 0, 0, 360, 1, thickness=cv2.FILLED)
    # Smooth texture, so that resampling at another scale sees the same tissue.
    noise = np.random.default_rng(seed).normal(0.0, 0.1, shape).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), sigmaX=3.0)
    image[head > 0] = BRAIN + texture[head > 0]
    # The 8-pixel skull ring lies just inside the head's outline.
    cv2.ellipse(image, (col, row), (half_width - 4, half_height - 4), 0, 0, 360, SKULL, thickness=8)
    cv2.ellipse(image, (col, row), (half_width // 5, half_height // 4), 0, 0, 360, VENTRICLE, cv2.FILLED)
    bleed_centre = (row - half_height // 3, col + half_width // 3)
    if bleed:
        cv2.circle(image, (bleed_centre[1], bleed_centre[0]), max(4, half_width // 12), BLEED, cv2.FILLED)
    return SyntheticHead(np.clip(image, 0.0, 1.0), head.astype(bool), bleed_centre)


def add_letter_and_border(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add a panel letter in the image corner, a small letter inside the head's bounding box
    but outside the head, and a white frame along the edges.

    Returns:
        The new image and boolean masks of the corner letter and of the inner letter.
    """
    marked = image.copy()
    corner_letter = np.zeros(image.shape, dtype=np.uint8)
    cv2.putText(corner_letter, "F", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 1, thickness=4)
    inner_letter = np.zeros(image.shape, dtype=np.uint8)
    cv2.putText(inner_letter, "b", (88, 46), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1, thickness=2)
    marked[corner_letter > 0] = 1.0
    marked[inner_letter > 0] = 0.95
    cv2.rectangle(marked, (0, 0), (image.shape[1] - 1, image.shape[0] - 1), 1.0, thickness=3)
    return marked, corner_letter > 0, inner_letter > 0


# to_grayscale


def test_to_grayscale_uint8_divides_by_255() -> None:
    image = np.array([[0, 51], [204, 255]], dtype=np.uint8)

    gray = to_grayscale(image)

    assert gray.dtype == np.float32
    np.testing.assert_allclose(gray, [[0.0, 0.2], [0.8, 1.0]], atol=1e-6)


def test_to_grayscale_uint8_keeps_a_dark_image_dark() -> None:
    image = np.full((4, 4), 10, dtype=np.uint8)
    image[0, 0] = 20

    gray = to_grayscale(image)

    assert gray.max() == pytest.approx(20 / 255)


def test_to_grayscale_uint16_stretches_the_used_range() -> None:
    image = np.array([[1000, 1500], [2000, 3000]], dtype=np.uint16)

    gray = to_grayscale(image)

    np.testing.assert_allclose(gray, [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)


def test_to_grayscale_constant_uint16_is_black() -> None:
    gray = to_grayscale(np.full((3, 5), 700, dtype=np.uint16))

    assert gray.shape == (3, 5)
    assert not gray.any()


def test_to_grayscale_float_in_unit_range_is_unchanged() -> None:
    image = np.array([[0.1, 0.4], [0.6, 0.9]], dtype=np.float64)

    gray = to_grayscale(image)

    assert gray.dtype == np.float32
    np.testing.assert_allclose(gray, image, atol=1e-6)


def test_to_grayscale_float_outside_unit_range_is_stretched() -> None:
    image = np.array([[-100.0, 0.0], [50.0, 100.0]])

    gray = to_grayscale(image)

    np.testing.assert_allclose(gray, [[0.0, 0.5], [0.75, 1.0]], atol=1e-6)


def test_to_grayscale_replaces_non_finite_values() -> None:
    image = np.array([[0.2, np.nan], [np.inf, 0.8]], dtype=np.float32)

    gray = to_grayscale(image)

    assert np.isfinite(gray).all()
    np.testing.assert_allclose(gray, [[0.2, 0.0], [0.0, 0.8]], atol=1e-6)


def test_to_grayscale_rgb_of_a_grey_image_gives_the_grey_levels() -> None:
    grey = np.random.default_rng(0).integers(0, 256, (6, 7), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)

    gray = to_grayscale(rgb)

    assert gray.shape == (6, 7)
    np.testing.assert_allclose(gray, grey / 255.0, atol=1e-5)


def test_to_grayscale_colour_uses_luminance_weights() -> None:
    # OpenCV channel order is B, G, R; green weighs most, blue least.
    blue, green, red = (np.zeros((2, 2, 3), dtype=np.uint8) for _ in range(3))
    blue[:, :, 0] = green[:, :, 1] = red[:, :, 2] = 255

    levels = [float(to_grayscale(image)[0, 0]) for image in (blue, green, red)]

    np.testing.assert_allclose(levels, [0.114, 0.587, 0.299], atol=1e-5)


def test_to_grayscale_rgba_drops_alpha() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (5, 5, 1), dtype=np.uint8)

    gray = to_grayscale(np.concatenate([rgb, alpha], axis=2))

    np.testing.assert_array_equal(gray, to_grayscale(rgb))


def test_to_grayscale_single_channel_is_squeezed() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)

    np.testing.assert_array_equal(to_grayscale(image), to_grayscale(image[:, :, 0]))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((10,), "2-D or 3-D"),
        ((2, 4, 4, 1), "2-D or 3-D"),
        ((4, 4, 2), "1, 3 or 4 channels"),
        ((4, 4, 5), "1, 3 or 4 channels"),
        ((0, 4), "no pixels"),
        ((0, 0, 3), "no pixels"),
    ],
)
def test_to_grayscale_rejects_bad_shapes(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_grayscale(np.zeros(shape, dtype=np.uint8))


# head_mask and crop_to_head


def test_head_mask_finds_the_head_and_fills_its_interior() -> None:
    synthetic = draw_head()

    mask = head_mask(synthetic.image)

    assert mask is not None
    intersection = np.logical_and(mask, synthetic.head).sum()
    union = np.logical_or(mask, synthetic.head).sum()
    assert intersection / union > 0.97
    # The dark ventricle lies inside the skull and belongs to the head.
    assert synthetic.image[160, 200] == pytest.approx(VENTRICLE)
    assert mask[160, 200]


def test_head_mask_ignores_letters_and_borders() -> None:
    synthetic = draw_head()
    image, corner_letter, inner_letter = add_letter_and_border(synthetic.image)

    mask = head_mask(image)

    assert mask is not None
    assert not mask[corner_letter].any()
    assert not mask[inner_letter].any()
    assert not mask[0, :].any() and not mask[:, 0].any()


def test_head_mask_never_takes_a_table_arc_for_a_small_head() -> None:
    # A small head (the top of the skull) and a scanner table's curved line with more pixels.
    synthetic = draw_head(shape=(400, 400), centre=(200, 180), axes=(48, 40))
    image = synthetic.image.copy()
    arc = np.zeros(image.shape, np.uint8)
    cv2.ellipse(arc, (150, 200), (190, 190), 0, -80, 80, 1, thickness=12)
    image[arc > 0] = 1.0
    assert arc.sum() > synthetic.head.sum()

    mask = head_mask(image)
    result = preprocess(image, PreprocessConfig(image_size=128))

    assert mask is not None
    assert not mask[arc > 0].any()
    assert np.logical_and(mask, synthetic.head).sum() / synthetic.head.sum() > 0.97
    assert result.geometry.to_original(result.image[:, :, 0])[arc > 0].max() < 0.01


@pytest.mark.parametrize(
    "image",
    [np.zeros((100, 100), dtype=np.float32), np.pad(np.ones((10, 10), dtype=np.float32), 45)],
    ids=["blank", "small-blob"],
)
def test_head_mask_returns_none_without_a_plausible_head(image: np.ndarray) -> None:
    assert head_mask(image) is None


def test_crop_to_head_excludes_corner_letter_and_border_and_blanks_inner_letter() -> None:
    synthetic = draw_head()
    image, corner_letter, inner_letter = add_letter_and_border(synthetic.image)
    head_rows = np.flatnonzero(synthetic.head.any(axis=1))
    head_cols = np.flatnonzero(synthetic.head.any(axis=0))

    crop, (top, bottom, left, right), crop_mask = crop_to_head(image)

    assert crop_mask is not None
    assert crop.shape == crop_mask.shape == (bottom - top, right - left)
    # The box holds the whole head plus a small margin, and no border or corner letter.
    assert 3 <= top <= head_rows[0] and head_rows[-1] < bottom <= image.shape[0] - 3
    assert 3 <= left <= head_cols[0] and head_cols[-1] < right <= image.shape[1] - 3
    assert top >= head_rows[0] - 15 and left >= head_cols[0] - 15
    letter_rows, letter_cols = np.nonzero(corner_letter)
    assert letter_rows.max() < top or letter_cols.max() < left
    # The inner letter falls inside the box, but outside the head: it must be blanked.
    inner_rows, inner_cols = np.nonzero(inner_letter)
    assert (inner_rows >= top).all() and (inner_cols >= left).all()
    assert not crop[inner_rows - top, inner_cols - left].any()
    # Head pixels are kept as they were.
    np.testing.assert_array_equal(crop[crop_mask], image[top:bottom, left:right][crop_mask])


def test_crop_to_head_can_keep_pixels_outside_the_head() -> None:
    synthetic = draw_head()
    image, _, inner_letter = add_letter_and_border(synthetic.image)

    crop, (top, _, left, _), _ = crop_to_head(image, mask_outside=False)

    inner_rows, inner_cols = np.nonzero(inner_letter)
    np.testing.assert_allclose(crop[inner_rows - top, inner_cols - left], 0.95)


def test_crop_to_head_margin_widens_the_box() -> None:
    image = draw_head().image

    _, tight, _ = crop_to_head(image, margin=0.0)
    _, loose, _ = crop_to_head(image, margin=0.05)

    assert loose[0] < tight[0] and loose[1] > tight[1]
    assert loose[2] < tight[2] and loose[3] > tight[3]


def test_crop_to_head_keeps_whole_image_without_a_head() -> None:
    image = np.zeros((50, 60), dtype=np.float32)

    crop, box, mask = crop_to_head(image)

    assert box == (0, 50, 0, 60)
    assert mask is None
    assert crop is image


# pad_to_square, resize_square


@pytest.mark.parametrize(
    ("shape", "offset"),
    [((4, 10), (3, 0)), ((9, 4), (0, 2)), ((6, 6), (0, 0))],
    ids=["wide", "tall", "square"],
)
def test_pad_to_square_centres_the_image(shape: tuple[int, int], offset: tuple[int, int]) -> None:
    image = np.random.default_rng(0).uniform(0.1, 1.0, shape).astype(np.float32)

    square, pad = pad_to_square(image)

    side = max(shape)
    assert square.shape == (side, side)
    assert square.dtype == np.float32
    assert pad == offset
    top, left = pad
    np.testing.assert_array_equal(square[top : top + shape[0], left : left + shape[1]], image)
    # Everything else is air.
    assert square.sum() == pytest.approx(image.sum(), rel=1e-6)


@pytest.mark.parametrize("size", [16, 64, 300])
def test_resize_square_shape_and_dtype(size: int) -> None:
    image = np.random.default_rng(0).uniform(0, 1, (128, 128)).astype(np.float32)

    resized = resize_square(image, size)

    assert resized.shape == (size, size)
    assert resized.dtype == np.float32


def test_resize_square_shrinking_averages_areas() -> None:
    # A fine checkerboard averages to mid grey when shrunk, rather than aliasing.
    checkerboard = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)

    resized = resize_square(checkerboard, 16)

    np.testing.assert_allclose(resized, 0.5, atol=1e-6)


def test_resize_square_enlarging_preserves_content() -> None:
    image = np.zeros((8, 8), dtype=np.float32)
    image[:, 4:] = 1.0

    resized = resize_square(image, 32)

    assert resized[:, :14].max() == 0.0
    assert resized[:, 18:].min() == 1.0


# normalize_intensity, apply_clahe


def test_normalize_intensity_uses_head_pixels_only() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40), dtype=np.float32)
    image[10:30, 10:30] = rng.uniform(0.3, 0.5, (20, 20))
    mask = image > 0

    normalized = normalize_intensity(image, mask, low_percentile=0.0, high_percentile=100.0)

    assert normalized.dtype == np.float32
    assert normalized[mask].min() == pytest.approx(0.0, abs=1e-6)
    assert normalized[mask].max() == pytest.approx(1.0, abs=1e-6)
    # Linear: the order and relative spacing of head values are kept.
    low, high = image[mask].min(), image[mask].max()
    np.testing.assert_allclose(normalized[mask], (image[mask] - low) / (high - low), atol=1e-5)
    # Background below the head's range is clipped to 0.
    assert not normalized[~mask].any()


def test_normalize_intensity_clips_outliers_beyond_the_percentiles() -> None:
    values = np.linspace(0.2, 0.6, 1000, dtype=np.float32).reshape(25, 40)
    values[0, 0], values[0, 1] = 0.0, 1.0

    normalized = normalize_intensity(values, None, low_percentile=1.0, high_percentile=99.0)

    assert normalized[0, 0] == 0.0 and normalized[0, 1] == 1.0
    assert normalized.min() == 0.0 and normalized.max() == 1.0
    assert 0.4 < float(np.median(normalized)) < 0.6


def test_normalize_intensity_is_window_invariant() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.3, 0.5, (30, 30)).astype(np.float32)
    brighter_window = (image - 0.1) * 1.8

    np.testing.assert_allclose(normalize_intensity(image), normalize_intensity(brighter_window), atol=1e-5)


def test_normalize_intensity_leaves_a_flat_image_alone() -> None:
    image = np.full((10, 10), 0.4, dtype=np.float32)

    np.testing.assert_array_equal(normalize_intensity(image), image)


def test_normalize_intensity_with_empty_mask_uses_the_whole_image() -> None:
    image = np.random.default_rng(0).uniform(0.3, 0.5, (20, 20)).astype(np.float32)
    empty = np.zeros(image.shape, dtype=bool)

    np.testing.assert_array_equal(normalize_intensity(image, empty), normalize_intensity(image))


def test_apply_clahe_raises_local_contrast() -> None:
    rng = np.random.default_rng(0)
    low_contrast = (0.45 + 0.03 * rng.standard_normal((128, 128))).astype(np.float32)

    equalized = apply_clahe(low_contrast)

    assert equalized.shape == low_contrast.shape
    assert equalized.dtype == np.float32
    assert 0.0 <= equalized.min() and equalized.max() <= 1.0
    assert equalized.std() > 1.5 * low_contrast.std()
    # Monotone per tile: brighter pixels stay brighter on average.
    bright = low_contrast > np.median(low_contrast)
    assert equalized[bright].mean() > equalized[~bright].mean()


def test_apply_clahe_clip_limit_bounds_the_stretch() -> None:
    rng = np.random.default_rng(0)
    low_contrast = (0.45 + 0.03 * rng.standard_normal((128, 128))).astype(np.float32)

    gentle = apply_clahe(low_contrast, clip_limit=1.0)
    strong = apply_clahe(low_contrast, clip_limit=4.0)

    assert gentle.std() < strong.std()


# preprocess


def model_input(image: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    return preprocess(image, config).image[:, :, 0]


@pytest.mark.parametrize(
    "image",
    [
        np.round(draw_head().image * 255).astype(np.uint8),
        np.round(draw_head().image * 4000).astype(np.uint16),
        np.repeat(np.round(draw_head().image * 255).astype(np.uint8)[:, :, None], 3, axis=2),
        draw_head().image.astype(np.float64) * 80.0 - 10.0,
    ],
    ids=["uint8", "uint16", "rgb", "float-hounsfield-like"],
)
@pytest.mark.parametrize("size", [64, 224])
def test_preprocess_output_shape_dtype_and_range(image: np.ndarray, size: int) -> None:
    result = preprocess(image, PreprocessConfig(image_size=size))

    assert result.image.shape == (size, size, 1)
    assert result.image.dtype == np.float32
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
    # The head fills most of the input: brain is mid grey, the outside is black.
    assert 0.4 < (result.image > 0.05).mean() < 0.95
    assert result.image.max() == pytest.approx(1.0, abs=0.05)
    assert result.grayscale.shape == image.shape[:2]
    assert result.geometry.original_shape == image.shape[:2]


def test_preprocess_crops_to_head_and_records_geometry() -> None:
    synthetic = draw_head()

    result = preprocess(synthetic.image, PreprocessConfig(image_size=64))

    top, bottom, left, right = result.geometry.crop_box
    height, width = bottom - top, right - left
    assert (height, width) != synthetic.image.shape
    assert result.geometry.square_side == max(height, width)
    assert result.geometry.pad == ((max(height, width) - height) // 2, (max(height, width) - width) // 2)


def test_preprocess_without_crop_keeps_the_whole_image() -> None:
    image = draw_head().image

    result = preprocess(image, PreprocessConfig(image_size=64, crop_to_head=False))

    assert result.geometry.crop_box == (0, 320, 0, 400)
    assert result.geometry.square_side == 400
    assert result.geometry.pad == (40, 0)


def test_preprocess_clahe_changes_the_input() -> None:
    image = draw_head().image

    plain = model_input(image, PreprocessConfig(image_size=64))
    equalized = model_input(image, PreprocessConfig(image_size=64, clahe=True))

    assert equalized.shape == plain.shape
    assert 0.0 <= equalized.min() and equalized.max() <= 1.0
    assert np.abs(equalized - plain).mean() > 0.01


def head_side(model_image: np.ndarray) -> float:
    """Side of the head in the model input, in pixels, from the area it covers."""
    return float(np.sqrt((model_image > 0.02).sum()))


def interior_difference(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean absolute difference inside both heads, 12 pixels or more away from their outlines."""
    both = ((reference > 0.02) & (other > 0.02)).astype(np.uint8)
    interior = cv2.erode(both, np.ones((25, 25), dtype=np.uint8)).astype(bool)
    assert interior.mean() > 0.3
    return float(np.abs(reference - other)[interior].mean())


def assert_nearly_same_input(reference_image: np.ndarray, other_image: np.ndarray) -> None:
    """Same head scale (within 3%) and same intensities inside the head.

    The inside tolerance sits well below the difference that another brain texture makes
    (about 0.01 on these heads); see ``test_nearly_same_input_tells_different_heads_apart``.
    """
    reference, other = model_input(reference_image), model_input(other_image)
    scale = head_side(other) / head_side(reference)
    assert abs(scale - 1.0) < 0.03, f"head scale differs by {scale - 1.0:+.3f}"
    difference = interior_difference(reference, other)
    assert difference < 0.006, f"mean difference inside the head {difference:.4f}"


def test_nearly_same_input_tells_different_heads_apart() -> None:
    image = draw_head().image

    with pytest.raises(AssertionError, match="inside the head"):
        assert_nearly_same_input(image, draw_head(seed=1).image)
    with pytest.raises(AssertionError, match="head scale"):
        assert_nearly_same_input(image, draw_head(axes=(120, 120)).image)


def test_preprocess_is_invariant_to_canvas_size() -> None:
    patch = draw_head(shape=(320, 280), centre=(160, 140), axes=(120, 140)).image
    canvas = np.zeros((700, 900), dtype=np.float32)
    canvas[80:400, 500:780] = patch

    assert_nearly_same_input(patch, canvas)


def test_preprocess_is_invariant_to_a_black_border() -> None:
    image = draw_head().image
    bordered = np.pad(image, ((32, 32), (40, 40)))

    assert_nearly_same_input(image, bordered)


def test_preprocess_is_invariant_to_resolution() -> None:
    image = draw_head().image
    enlarged = cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
    reduced = cv2.resize(
        image, (image.shape[1] * 3 // 4, image.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA
    )

    assert_nearly_same_input(image, enlarged)
    assert_nearly_same_input(image, reduced)


def test_preprocess_is_invariant_to_the_display_window() -> None:
    image = draw_head().image
    darker = image * 0.6 + 0.05

    np.testing.assert_allclose(model_input(darker), model_input(image), atol=1e-4)


def test_preprocess_removes_letters_and_borders() -> None:
    image = draw_head().image
    marked, _, _ = add_letter_and_border(image)

    np.testing.assert_allclose(model_input(marked), model_input(image), atol=1e-4)


def test_crop_size_does_not_depend_on_the_canvas() -> None:
    patch = draw_head(shape=(320, 280), centre=(160, 140), axes=(120, 140)).image
    canvas = np.zeros((700, 900), dtype=np.float32)
    canvas[80:400, 500:780] = patch

    patch_side = preprocess(patch).geometry.square_side
    canvas_side = preprocess(canvas).geometry.square_side

    assert abs(canvas_side - patch_side) <= 1


def test_geometry_maps_model_input_back_onto_the_original() -> None:
    config = PreprocessConfig(image_size=128)
    canvas_shape = (500, 640)
    with_bleed = draw_head(shape=canvas_shape, centre=(230, 380), axes=(150, 180))
    without_bleed = draw_head(shape=canvas_shape, centre=(230, 380), axes=(150, 180), bleed=False)
    result = preprocess(with_bleed.image, config)
    # The bleed, located on the model-input grid by what it changes there.
    bleed_map = np.abs(result.image[:, :, 0] - model_input(without_bleed.image, config))

    on_original = result.geometry.to_original(bleed_map)

    assert on_original.shape == canvas_shape
    assert on_original.dtype == np.float32
    # The bleed is a flat disc: compare the centre of the mapped disc with the drawn one.
    rows, cols = np.nonzero(on_original > 0.5 * on_original.max())
    centre = (rows.mean(), cols.mean())
    assert np.hypot(centre[0] - with_bleed.bleed_centre[0], centre[1] - with_bleed.bleed_centre[1]) <= 3
    assert rows.min() >= with_bleed.bleed_centre[0] - 16 and rows.max() <= with_bleed.bleed_centre[0] + 16
    top, bottom, left, right = result.geometry.crop_box
    outside = np.ones(canvas_shape, dtype=bool)
    outside[top:bottom, left:right] = False
    assert not on_original[outside].any()


def test_geometry_places_a_marked_point() -> None:
    geometry = Geometry(original_shape=(100, 200), crop_box=(20, 80, 40, 160), pad=(30, 0), square_side=120)
    mark = np.zeros((60, 60), dtype=np.float32)
    # Input pixel (35, 10) at scale 2 covers square rows 70..71, columns 20..21;
    # minus the 30-row pad and plus the crop offset: original rows 60..61, columns 60..61.
    mark[35, 10] = 1.0

    on_original = geometry.to_original(mark)

    peak = np.unravel_index(np.argmax(on_original), on_original.shape)
    assert abs(peak[0] - 60.5) <= 1 and abs(peak[1] - 60.5) <= 1
    assert not on_original[:20].any() and not on_original[80:].any()
    assert not on_original[:, :40].any() and not on_original[:, 160:].any()


def test_geometry_rejects_maps_that_are_not_2d() -> None:
    geometry = Geometry(original_shape=(10, 10), crop_box=(0, 10, 0, 10), pad=(0, 0), square_side=10)

    with pytest.raises(ValueError, match="2-D map"):
        geometry.to_original(np.zeros((4, 4, 1), dtype=np.float32))


# PreprocessConfig


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_size": 8}, "image_size"),
        ({"head_threshold": -0.1}, "head_threshold"),
        ({"head_threshold": 1.0}, "head_threshold"),
        ({"low_percentile": 50.0, "high_percentile": 50.0}, "Percentiles"),
        ({"low_percentile": -1.0}, "Percentiles"),
        ({"high_percentile": 101.0}, "Percentiles"),
    ],
)
def test_preprocess_config_validation(values: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(**values)  # type: ignore[arg-type]


def test_preprocess_config_round_trip() -> None:
    config = PreprocessConfig(image_size=96, clahe=True, crop_margin=0.05, low_percentile=1.0)

    values = config.to_dict()

    assert values["image_size"] == 96 and values["clahe"] is True
    assert PreprocessConfig.from_dict(values) == config


def test_preprocess_config_from_dict_ignores_unknown_keys() -> None:
    values = {**PreprocessConfig(image_size=128).to_dict(), "added_in_a_later_version": 1}

    assert PreprocessConfig.from_dict(values) == PreprocessConfig(image_size=128)


# Real images


PANEL_LETTER_IMAGES = ["046.png", "047.png", "100.png", "101.png", "183.png"]


def letter_pixels(gray: np.ndarray) -> np.ndarray:
    """Bright pixels in the top-left corner, where these images carry a panel letter."""
    corner = np.zeros(gray.shape, dtype=bool)
    corner[: int(gray.shape[0] * 0.12), : int(gray.shape[1] * 0.12)] = True
    return corner & (gray > 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", PANEL_LETTER_IMAGES)
def test_preprocess_real_images_with_panel_letters(data_dir: Path, name: str) -> None:
    image = cv2.imread(str(data_dir / "head_ct" / "images" / name), cv2.IMREAD_UNCHANGED)
    assert image is not None

    result = preprocess(image)

    assert result.image.shape == (224, 224, 1)
    assert result.image.dtype == np.float32
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
    assert 0.35 < (result.image > 0.05).mean() < 0.9
    letter = letter_pixels(result.grayscale)
    assert letter.sum() > 100, "expected a panel letter in the top-left corner"
    # Mapped back onto the original grid, the model input is black where the letter was.
    back = result.geometry.to_original(result.image[:, :, 0])
    assert back[letter].max() < 0.01


@pytest.mark.slow
def test_preprocess_removes_panel_letter_on_grey_background(data_dir: Path) -> None:
    image = cv2.imread(str(data_dir / "head_ct" / "images" / "115.png"), cv2.IMREAD_UNCHANGED)

    result = preprocess(image)

    letter = letter_pixels(result.grayscale)
    assert letter.sum() > 50
    assert result.geometry.to_original(result.image[:, :, 0])[letter].max() < 0.01
