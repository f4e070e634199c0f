"""Training-time augmentation on preprocessed batches (float32, N x H x W x C, in [0, 1]; C is 1 for
a slice, more where stacked slices or a mask travel with it).

Geometric changes (flips, rotations, shifts, zooms) teach the model that position and
orientation carry no diagnosis; intensity changes (brightness, contrast, gamma) stand in for
other scanners' windows; blur and down-then-up sampling erase the resolution difference
between sources, which is a shortcut in the head_ct data (its haemorrhage images are larger).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import tensorflow as tf

__all__ = ["AugmentationConfig", "Augmenter"]


@dataclass(frozen=True)
class AugmentationConfig:
    flip_horizontal: bool = True
    flip_vertical: bool = True
    rotation_degrees: float = 15.0
    shift_fraction: float = 0.08
    zoom_fraction: float = 0.15
    brightness: float = 0.08
    contrast: float = 0.2
    gamma: float = 0.3
    blur_probability: float = 0.3
    blur_max_sigma: float = 1.5
    resample_probability: float = 0.35
    resample_min_scale: float = 0.25
    noise_std: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gaussian_kernel(sigma: tf.Tensor, radius: int = 4) -> tf.Tensor:
    positions = tf.range(-radius, radius + 1, dtype=tf.float32)
    weights = tf.exp(-0.5 * tf.square(positions / tf.maximum(sigma, 1e-3)))
    weights /= tf.reduce_sum(weights)
    return weights


class Augmenter:
    """Random augmentation of a batch; stateful because it owns its random generators."""

    def __init__(self, config: AugmentationConfig | None = None, seed: int = 0) -> None:
        self.config = config or AugmentationConfig()
        cfg = self.config
        layers: list[keras.Layer] = []
        # One layer per direction: RandomFlip("horizontal_and_vertical") draws a single coin per
        # image, so it only ever flips both ways at once and never mirrors left to right alone.
        if cfg.flip_horizontal:
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if cfg.flip_vertical:
            layers.append(keras.layers.RandomFlip("vertical", seed=seed + 5))
        if cfg.rotation_degrees > 0:
            layers.append(
                keras.layers.RandomRotation(cfg.rotation_degrees / 360.0, fill_mode="constant", seed=seed + 1)
            )
        if cfg.shift_fraction > 0:
            layers.append(
                keras.layers.RandomTranslation(
                    cfg.shift_fraction, cfg.shift_fraction, fill_mode="constant", seed=seed + 2
                )
            )
        if cfg.zoom_fraction > 0:
            layers.append(
                keras.layers.RandomZoom(
                    (-cfg.zoom_fraction, cfg.zoom_fraction), fill_mode="constant", seed=seed + 3
                )
            )
        # An empty Sequential cannot be built, so a config without geometric changes has none.
        self._geometric = keras.Sequential(layers, name="geometric_augmentation") if layers else None
        self._generator = tf.random.Generator.from_seed(seed + 4)

    def _uniform(self, batch: tf.Tensor, low: float, high: float) -> tf.Tensor:
        return self._generator.uniform([batch, 1, 1, 1], low, high)

    def chance(self, batch: tf.Tensor, probability: float) -> tf.Tensor:
        """Per image (``batch x 1 x 1 x 1``): 1 with ``probability``, else 0."""
        return tf.cast(self._generator.uniform([batch, 1, 1, 1]) < probability, tf.float32)

    def _blur(self, images: tf.Tensor) -> tf.Tensor:
        cfg = self.config
        sigma = self._generator.uniform([], 0.3, cfg.blur_max_sigma)
        kernel = _gaussian_kernel(sigma)
        # Each channel is blurred on its own (a depthwise convolution), so stacked slices stay apart.
        channels = tf.shape(images)[-1]
        horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
        vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
        blurred = tf.nn.depthwise_conv2d(images, horizontal, strides=[1, 1, 1, 1], padding="SAME")
        return tf.nn.depthwise_conv2d(blurred, vertical, strides=[1, 1, 1, 1], padding="SAME")

    def _resample(self, images: tf.Tensor) -> tf.Tensor:
        size = tf.shape(images)[1:3]
        scale = self._generator.uniform([], self.config.resample_min_scale, 1.0)
        small = tf.maximum(tf.cast(tf.cast(size, tf.float32) * scale, tf.int32), 8)
        down = tf.image.resize(images, small, method="area")
        return tf.image.resize(down, size, method="bilinear")

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return self.intensity(self.geometric(images))

    def geometric(self, images: tf.Tensor) -> tf.Tensor:
        """Flips, rotation, shift and zoom, applied alike to every channel of an image (so a
        mask stacked as extra channels moves with its image)."""
        images = tf.convert_to_tensor(images, tf.float32)
        if self._geometric is None:
            return images
        return self._geometric(images, training=True)

    def intensity(self, images: tf.Tensor) -> tf.Tensor:
        """Blur, resampling, gamma, contrast, brightness and noise; output clipped to [0, 1]."""
        cfg = self.config
        images = tf.convert_to_tensor(images, tf.float32)
        batch = tf.shape(images)[0]
        # Whole-batch blur and resampling, applied per image through a random mask.
        if cfg.blur_probability > 0:
            mask = self.chance(batch, cfg.blur_probability)
            images = mask * self._blur(images) + (1.0 - mask) * images
        if cfg.resample_probability > 0:
            mask = self.chance(batch, cfg.resample_probability)
            images = mask * self._resample(images) + (1.0 - mask) * images
        if cfg.gamma > 0:
            gamma = tf.exp(self._uniform(batch, -cfg.gamma, cfg.gamma))
            images = tf.pow(tf.clip_by_value(images, 0.0, 1.0) + 1e-6, gamma)
        if cfg.contrast > 0:
            factor = self._uniform(batch, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
            mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
            images = (images - mean) * factor + mean
        if cfg.brightness > 0:
            images = images + self._uniform(batch, -cfg.brightness, cfg.brightness)
        if cfg.noise_std > 0:
            images = images + self._generator.normal(tf.shape(images), stddev=cfg.noise_std)
        return tf.clip_by_value(images, 0.0, 1.0)
