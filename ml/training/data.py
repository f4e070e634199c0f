"""The classifier's training data: the patient split, preprocessed arrays, batches and sample weights."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from ml.data.augmentation import Augmenter
from ml.data.datasets import Sample, load_image, read_datasets
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.data.splits import Split, patient_split, write_manifest
from ml.training.config import TrainConfig

logger = logging.getLogger(__name__)


def read_split(config: TrainConfig, data_dir: Path, output_dir: Path) -> Split:
    """The datasets (a seeded subset with ``max_samples``), split by patient; the manifest is written."""
    samples = read_datasets(data_dir, config.datasets)
    if config.max_samples is not None:
        rng = np.random.default_rng(config.seed)
        keep = sorted(rng.choice(len(samples), size=min(config.max_samples, len(samples)), replace=False))
        samples = [samples[i] for i in keep]
    split: Split = patient_split(samples, config.validation_fraction, config.test_fraction, config.seed)
    write_manifest(split, output_dir / "split_manifest.json", config.seed)
    for name, members in split.parts().items():
        logger.info(
            "%s: %d images, %d positive, %d patients",
            name,
            len(members),
            sum(s.label for s in members),
            len({s.group for s in members}),
        )
    return split


# The reader that decoded the cached arrays is part of their key: arrays another reader made
# (which may turn a colour PNG into other grey levels) are never reused.
CACHE_READER = "decode_image"


def cache_key(samples: Sequence[Sample], config: PreprocessConfig) -> str:
    """Names the arrays made from these samples with this preprocessing and reader (cache files)."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(CACHE_READER.encode())
    for sample in samples:
        digest.update(str(sample.path).encode())
    return digest.hexdigest()[:16]


def preprocess_samples(
    samples: Sequence[Sample], config: PreprocessConfig, cache_dir: Path | None = None
) -> np.ndarray:
    """Preprocess every sample once; returns uint8 ``N x S x S x 1`` (cached on disk)."""
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"preprocessed-{cache_key(samples, config)}.npy"
        if cache_path.is_file():
            return np.load(cache_path)
    size = config.image_size
    images = np.zeros((len(samples), size, size, 1), dtype=np.uint8)
    for index, sample in enumerate(samples):
        result = preprocess(load_image(sample.path), config)
        # uint8 storage quarters memory; the model sees the same grey levels a PNG would.
        images[index] = np.round(result.image * 255.0).astype(np.uint8)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_path, images)
    return images


def tf_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    augmenter: Augmenter | None,
    shuffle_seed: int | None,
    weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    columns: tuple[np.ndarray, ...] = (images, labels.astype(np.float32))
    if weights is not None:
        columns += (weights.astype(np.float32),)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda x, *rest: (tf.cast(x, tf.float32) / 255.0, *rest), num_parallel_calls=tf.data.AUTOTUNE
    )
    if augmenter is not None:
        dataset = dataset.map(lambda x, *rest: (augmenter(x), *rest))
    return dataset.prefetch(tf.data.AUTOTUNE)


def balanced_sample_weights(samples: Sequence[Sample], by_dataset: bool = True) -> np.ndarray:
    """Per-sample weights giving every (dataset, label) cell, or every label when not
    ``by_dataset``, the same total weight (the latter is plain class weighting).

    The weights average 1 over the samples, so the loss keeps its scale.
    """
    cells = [(sample.dataset if by_dataset else "", sample.label) for sample in samples]
    counts = Counter(cells)
    share = len(cells) / len(counts)
    return np.array([share / counts[cell] for cell in cells], dtype=np.float64)


def labels_balanced_per_source(samples: Sequence[Sample]) -> np.ndarray:
    """Per-sample weights under which every dataset keeps its share of the total weight and,
    inside it, every label present carries the same weight.

    Plain class weighting over pooled data gives each collection the pooled label balance
    instead of its own: with 50% positives in a small collection and 12% in a large one, the
    small one's positives outweigh its negatives several times over, and "looks like that
    collection" becomes evidence of haemorrhage. Here no collection's look changes the odds.
    The weights average 1 over the samples.
    """
    datasets = Counter(sample.dataset for sample in samples)
    cells = Counter((sample.dataset, sample.label) for sample in samples)
    labels_in = Counter(dataset for dataset, _ in cells)
    return np.array(
        [datasets[s.dataset] / (labels_in[s.dataset] * cells[(s.dataset, s.label)]) for s in samples],
        dtype=np.float64,
    )
