"""Command line: does a density channel (Hounsfield units above blood) help the classifier?

Continues a trained one-channel classifier (by default ich-compact 1.1.0) as a two-channel
network, the second channel being :mod:`ml.data.density`'s map (the harness:
:mod:`ml.channel_experiment`). CT-ICH's bone-window images are the density source; the channel
is blank for ``head_ct`` (Hounsfield units unknown) and, with ``--share``, for a share of
the CT-ICH training slices, so the network also reads images without it. Geometry changes both
channels alike; brightness, contrast, blur and noise change only the image::

    python -m ml.density_experiment --output artifacts/experiments/density-a
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from ml.channel_experiment import ChannelExperiment, main
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.datasets import Sample, load_image
from ml.data.density import density_from_hounsfield, hounsfield_from_bone_window, preprocess_with_density
from ml.data.preprocessing import PreprocessConfig
from ml.training.data import cache_key


def bone_path(sample: Sample) -> Path | None:
    """The bone-window twin of a CT-ICH brain-window slice, when it exists."""
    if sample.dataset != "ct_ich" or sample.path.parent.name != "brain":
        return None
    path = sample.path.parent.parent / "bone" / sample.path.name
    return path if path.is_file() else None


def sample_density(sample: Sample) -> np.ndarray | None:
    """The density map of a sample on its own grid, or ``None`` where Hounsfield units are unknown."""
    path = bone_path(sample)
    if path is None:
        return None
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        return None
    return density_from_hounsfield(hounsfield_from_bone_window(gray))


def two_channel_arrays(samples: Sequence[Sample], config: PreprocessConfig, cache_dir: Path) -> np.ndarray:
    """uint8 ``N x S x S x 2``: the preprocessed image and its density (cached on disk)."""
    cache_path = cache_dir / f"density-{cache_key(samples, config)}.npy"
    if cache_path.is_file():
        return np.load(cache_path)
    size = config.image_size
    arrays = np.zeros((len(samples), size, size, 2), np.uint8)
    for index, sample in enumerate(samples):
        image = load_image(sample.path)
        density = sample_density(sample)
        if density is not None and density.shape != image.shape[:2]:
            density = None
        arrays[index] = np.round(preprocess_with_density(image, density, config) * 255.0).astype(np.uint8)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache_path, arrays)
    return arrays


def without_density(images: np.ndarray) -> np.ndarray:
    """The inputs with the density channel blank (Hounsfield units unknown)."""
    blank = images.copy()
    blank[..., 1] = 0
    return blank


def training_data(
    images: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
    dropout: float,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled, augmented batches: geometry alike on both channels, intensity on the image only,
    and the density blanked on a share ``dropout`` of the images."""
    augmenter = Augmenter(AugmentationConfig(), seed)
    generator = tf.random.Generator.from_seed(seed + 11)

    def augment(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = augmenter.geometric(tf.cast(x, tf.float32) / 255.0)
        image = augmenter.intensity(x[..., :1])
        keep = tf.cast(generator.uniform([tf.shape(x)[0], 1, 1, 1]) >= dropout, tf.float32)
        return tf.concat([image, x[..., 1:] * keep], axis=-1), y, w

    dataset = tf.data.Dataset.from_tensor_slices(
        (images, labels.astype(np.float32), weights.astype(np.float32))
    )
    dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return dataset.map(augment).prefetch(tf.data.AUTOTUNE)


DENSITY = ChannelExperiment(
    prog="python -m ml.density_experiment",
    channels=2,
    position=0,
    as_is_name="density present",
    changed_name="density blanked",
    arrays=two_channel_arrays,
    changed=without_density,
    batches=training_data,
    share_help="share of the training images shown with the density channel blank",
    minutes=40.0,
)


if __name__ == "__main__":
    raise SystemExit(main(DENSITY, (__doc__ or "").splitlines()[0]))
