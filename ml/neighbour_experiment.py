"""Command line: do the neighbouring slices of a series, as extra input channels, help the classifier?

Continues a trained one-channel classifier (by default ich-compact 1.1.0) as a three-channel
network reading ``[slice above, slice, slice below]``, the source's weights on the middle channel
(the harness: :mod:`ml.channel_experiment`). CT-ICH slices get
their series neighbours (a slice at either end of its series repeats itself); a single image
(``head_ct``) repeats itself in all three channels, as a single uploaded slice would. With
``--share`` a share of the CT-ICH training slices is shown as single images too, and the
neighbours swap places at random, so the network depends on neither the series nor its
direction. Each slice is preprocessed on its own, as the service preprocesses every slice of a
series::

    python -m ml.neighbour_experiment --output artifacts/experiments/neighbours-a
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from ml.channel_experiment import ChannelExperiment, main
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.datasets import Sample
from ml.data.preprocessing import PreprocessConfig
from ml.training.data import preprocess_samples

_SLICE_NUMBER = re.compile(r"(\d+)\.\w+$")


def neighbour_indices(samples: Sequence[Sample]) -> np.ndarray:
    """``N x 3`` indices into ``samples``: the slice above, the slice, the slice below, in series
    order within each patient of a series collection; the slice itself where there is none."""
    table = np.repeat(np.arange(len(samples))[:, None], 3, axis=1)
    series: dict[str, list[tuple[int, int]]] = {}
    for index, sample in enumerate(samples):
        match = _SLICE_NUMBER.search(sample.path.name)
        if sample.dataset == "ct_ich" and match:
            series.setdefault(sample.group, []).append((int(match.group(1)), index))
    for members in series.values():
        ordered = [index for _, index in sorted(members)]
        for position, index in enumerate(ordered):
            table[index, 0] = ordered[max(0, position - 1)]
            table[index, 2] = ordered[min(len(ordered) - 1, position + 1)]
    return table


def stacked(images: np.ndarray, table: np.ndarray) -> np.ndarray:
    """uint8 ``N x S x S x 3`` from one-channel arrays and a neighbour table."""
    return np.concatenate([images[table[:, column]] for column in range(3)], axis=-1)


def as_single(images: np.ndarray) -> np.ndarray:
    """Every slice as if uploaded alone: the middle channel in all three."""
    return np.repeat(images[..., 1:2], 3, axis=-1)


def training_data(
    images: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
    single_share: float,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled, augmented batches (the same change on all three channels); a share shown as
    single images, and the neighbours swapped at random."""
    augmenter = Augmenter(AugmentationConfig(), seed)
    generator = tf.random.Generator.from_seed(seed + 13)

    def augment(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = tf.cast(x, tf.float32) / 255.0
        batch = tf.shape(x)[0]
        single = tf.cast(generator.uniform([batch, 1, 1, 1]) < single_share, tf.float32)
        middle = x[..., 1:2]
        x = single * tf.concat([middle, middle, middle], axis=-1) + (1.0 - single) * x
        swap = tf.cast(generator.uniform([batch, 1, 1, 1]) < 0.5, tf.float32)
        x = swap * tf.reverse(x, axis=[-1]) + (1.0 - swap) * x
        return augmenter(x), y, w

    dataset = tf.data.Dataset.from_tensor_slices(
        (images, labels.astype(np.float32), weights.astype(np.float32))
    )
    dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return dataset.map(augment).prefetch(tf.data.AUTOTUNE)


def neighbour_arrays(samples: Sequence[Sample], config: PreprocessConfig, cache_dir: Path) -> np.ndarray:
    """uint8 ``N x S x S x 3``: each slice between its neighbours."""
    return stacked(preprocess_samples(samples, config, cache_dir), neighbour_indices(samples))


NEIGHBOURS = ChannelExperiment(
    prog="python -m ml.neighbour_experiment",
    channels=3,
    position=1,
    as_is_name="with neighbours",
    changed_name="single images",
    arrays=neighbour_arrays,
    changed=as_single,
    batches=training_data,
    share_help="share of the training slices shown as single images",
    minutes=30.0,
)


if __name__ == "__main__":
    raise SystemExit(main(NEIGHBOURS, (__doc__ or "").splitlines()[0]))
