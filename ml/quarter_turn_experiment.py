"""Command line: can the classifier learn that a quarter turn is no diagnosis, and keep CT-ICH?

Continues a trained classifier (by default ich-compact 1.1.0, whose augmentation turns at most
15 degrees) with a share of its training images turned by a random quarter turn (``--share``),
on top of its usual augmentation (the harness: :mod:`ml.channel_experiment`). The validation
report compares the slices upright and turned a quarter clockwise: slice AUC per collection, and
how far the turn moves the probability (mean change, decisions flipped at the source's
threshold)::

    python -m ml.quarter_turn_experiment --output artifacts/experiments/quarter-turns-a
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ml.channel_experiment import ChannelExperiment, main
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.training.data import preprocess_samples


def turned(images: np.ndarray) -> np.ndarray:
    """Every slice turned a quarter clockwise."""
    return np.ascontiguousarray(np.rot90(images, k=-1, axes=(1, 2)))


def training_data(
    images: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
    share: float,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled, augmented batches; each image turned by a random quarter turn with ``share``."""
    augmenter = Augmenter(AugmentationConfig(), seed)
    generator = tf.random.Generator.from_seed(seed + 17)

    def augment(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = augmenter(tf.cast(x, tf.float32) / 255.0)
        batch = tf.shape(x)[0]
        turns = generator.uniform([batch], 1, 4, dtype=tf.int32)
        chosen = tf.cast(generator.uniform([batch]) < share, tf.int32) * turns
        # Square inputs: a turned image keeps its shape, so each image takes its own turn.
        x = tf.map_fn(
            lambda item: tf.image.rot90(item[0], item[1]), (x, chosen), fn_output_signature=tf.float32
        )
        return x, y, w

    dataset = tf.data.Dataset.from_tensor_slices(
        (images, labels.astype(np.float32), weights.astype(np.float32))
    )
    dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return dataset.map(augment).prefetch(tf.data.AUTOTUNE)


QUARTER_TURNS = ChannelExperiment(
    prog="python -m ml.quarter_turn_experiment",
    channels=1,
    position=0,
    as_is_name="upright",
    changed_name="turned a quarter",
    arrays=preprocess_samples,
    changed=turned,
    batches=training_data,
    share_help="share of the training images turned by a random quarter turn",
    minutes=25.0,
)


if __name__ == "__main__":
    raise SystemExit(main(QUARTER_TURNS, (__doc__ or "").splitlines()[0]))
