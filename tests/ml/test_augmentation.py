"""Training-time augmentation of preprocessed batches."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ml.data.augmentation import AugmentationConfig, Augmenter

NOTHING = AugmentationConfig(
    flip_horizontal=False,
    flip_vertical=False,
    rotation_degrees=0.0,
    shift_fraction=0.0,
    zoom_fraction=0.0,
    brightness=0.0,
    contrast=0.0,
    gamma=0.0,
    blur_probability=0.0,
    resample_probability=0.0,
    noise_std=0.0,
)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """Sixteen asymmetric 32 x 32 images in [0.2, 0.8], so that every flip shows."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.8, (16, 32, 32, 1)).astype(np.float32)
    images[:, 4:10, 2:8, :] = 0.95
    return images


@pytest.fixture(scope="module")
def mid_grey_batch() -> np.ndarray:
    """Sixteen images in [0.3, 0.7]: brightness and contrast changes never reach the clip."""
    return np.random.default_rng(1).uniform(0.3, 0.7, (16, 32, 32, 1)).astype(np.float32)


def augment(batch: np.ndarray, config: AugmentationConfig | None = None, seed: int = 0) -> np.ndarray:
    return np.asarray(Augmenter(config, seed=seed)(batch))


def test_default_augmentation_keeps_shape_dtype_and_range(batch: np.ndarray) -> None:
    augmented = augment(batch)

    assert augmented.shape == batch.shape
    assert augmented.dtype == np.float32
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0


def test_default_augmentation_changes_every_image(batch: np.ndarray) -> None:
    augmented = augment(batch)

    per_image = np.abs(augmented - batch).mean(axis=(1, 2, 3))
    assert (per_image > 0.01).all()


def test_same_seed_gives_same_output(batch: np.ndarray) -> None:
    np.testing.assert_array_equal(augment(batch, seed=7), augment(batch, seed=7))


def test_different_seeds_give_different_output(batch: np.ndarray) -> None:
    assert np.abs(augment(batch, seed=7) - augment(batch, seed=8)).mean() > 0.01


def test_successive_calls_draw_new_augmentations(batch: np.ndarray) -> None:
    augmenter = Augmenter(seed=3)

    first, second = np.asarray(augmenter(batch)), np.asarray(augmenter(batch))

    assert np.abs(first - second).mean() > 0.01


def test_everything_off_is_the_identity(batch: np.ndarray) -> None:
    np.testing.assert_array_equal(augment(batch, NOTHING), batch)


def test_flips_only_give_exact_flips(batch: np.ndarray) -> None:
    config = replace(NOTHING, flip_horizontal=True, flip_vertical=True)

    images = np.concatenate([batch, batch])

    augmented = augment(images, config)

    seen = set()
    for original, result in zip(images, augmented, strict=True):
        candidates = {
            "identity": original,
            "horizontal": original[:, ::-1],
            "vertical": original[::-1, :],
            "both": original[::-1, ::-1],
        }
        matches = [name for name, candidate in candidates.items() if np.array_equal(result, candidate)]
        assert len(matches) == 1
        seen.add(matches[0])
    # The two directions are drawn independently: a mirror image alone occurs too.
    assert seen == {"identity", "horizontal", "vertical", "both"}


@pytest.mark.parametrize(
    ("config", "allowed"),
    [
        (replace(NOTHING, flip_horizontal=True), {"identity", "horizontal"}),
        (replace(NOTHING, flip_vertical=True), {"identity", "vertical"}),
    ],
    ids=["horizontal", "vertical"],
)
def test_one_flip_direction(batch: np.ndarray, config: AugmentationConfig, allowed: set[str]) -> None:
    augmented = augment(batch, config)

    seen = set()
    for original, result in zip(batch, augmented, strict=True):
        candidates = {"identity": original, "horizontal": original[:, ::-1], "vertical": original[::-1, :]}
        matches = {name for name, candidate in candidates.items() if np.array_equal(result, candidate)}
        assert matches and matches <= allowed
        seen |= matches
    assert seen == allowed


@pytest.mark.parametrize(
    "option",
    [
        {"rotation_degrees": 15.0},
        {"shift_fraction": 0.08},
        {"zoom_fraction": 0.15},
        {"brightness": 0.08},
        {"contrast": 0.2},
        {"gamma": 0.3},
        {"blur_probability": 1.0},
        {"resample_probability": 1.0},
        {"noise_std": 0.02},
    ],
    ids=lambda option: next(iter(option)),
)
def test_each_option_alone_changes_the_batch(batch: np.ndarray, option: dict[str, float]) -> None:
    augmented = augment(batch, replace(NOTHING, **option))  # type: ignore[arg-type]

    assert augmented.shape == batch.shape
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0
    assert np.abs(augmented - batch).mean() > 1e-3


def test_brightness_shifts_each_image_by_one_offset(mid_grey_batch: np.ndarray) -> None:
    augmented = augment(mid_grey_batch, replace(NOTHING, brightness=0.08))

    offsets = augmented - mid_grey_batch
    np.testing.assert_allclose(offsets, offsets[:, :1, :1, :] * np.ones_like(offsets), atol=1e-6)
    assert np.abs(offsets[:, 0, 0, 0]).max() <= 0.08 + 1e-6
    assert np.unique(np.round(offsets[:, 0, 0, 0], 5)).size > 1


def test_contrast_keeps_each_image_mean(mid_grey_batch: np.ndarray) -> None:
    augmented = augment(mid_grey_batch, replace(NOTHING, contrast=0.2))

    means = mid_grey_batch.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(augmented.mean(axis=(1, 2, 3)), means, atol=1e-5)
    ratio = augmented.std(axis=(1, 2, 3)) / mid_grey_batch.std(axis=(1, 2, 3))
    assert ((ratio >= 0.8 - 1e-4) & (ratio <= 1.2 + 1e-4)).all()


def test_gamma_keeps_the_order_of_grey_levels(batch: np.ndarray) -> None:
    augmented = augment(batch, replace(NOTHING, gamma=0.3))

    for original, result in zip(batch, augmented, strict=True):
        order = np.argsort(original.ravel(), kind="stable")
        assert (np.diff(result.ravel()[order]) >= -1e-6).all()


def test_blur_smooths_the_images(batch: np.ndarray) -> None:
    augmented = augment(batch, replace(NOTHING, blur_probability=1.0))

    def roughness(images: np.ndarray) -> float:
        return float(np.abs(np.diff(images, axis=2)).mean())

    assert roughness(augmented) < 0.8 * roughness(batch)
    np.testing.assert_allclose(augmented[:, 8:24, 8:24].mean(), batch[:, 8:24, 8:24].mean(), atol=0.01)


def test_blur_keeps_stacked_channels_apart(batch: np.ndarray) -> None:
    # Three channels: the image, half of it, and its mirror. Blurring each on its own keeps
    # the second exactly half the first and the third the mirror of the first.
    stacked = np.concatenate([batch, 0.5 * batch, batch[:, :, ::-1]], axis=-1)
    augmented = augment(stacked, replace(NOTHING, blur_probability=1.0))
    assert augmented.shape == stacked.shape
    np.testing.assert_allclose(augmented[..., 1], 0.5 * augmented[..., 0], atol=1e-5)
    np.testing.assert_allclose(augmented[..., 2], augmented[:, :, ::-1, 0], atol=1e-5)
    single = augment(batch, replace(NOTHING, blur_probability=1.0))
    assert np.abs(np.diff(single, axis=2)).mean() < np.abs(np.diff(batch, axis=2)).mean()


def test_noise_has_the_configured_spread(batch: np.ndarray) -> None:
    augmented = augment(batch, replace(NOTHING, noise_std=0.02))

    residual = (augmented - batch)[:, 12:, 12:]
    assert residual.std() == pytest.approx(0.02, rel=0.1)
    assert abs(residual.mean()) < 0.002


def test_config_to_dict_lists_every_option() -> None:
    values = AugmentationConfig().to_dict()

    assert values["rotation_degrees"] == 15.0
    assert AugmentationConfig(**values) == AugmentationConfig()
