"""The segmentation model's training data: the splits, preprocessed slices and masks, the mixed batches."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ml.data.augmentation import Augmenter
from ml.data.preprocessing import PreprocessConfig
from ml.data.segmentation import (
    SUBTYPES,
    SegSample,
    preprocess_pair,
    read_bhsd,
    read_ct_ich_subtypes,
    split_ct_ich_by_manifest,
    volume_split,
)
from ml.models.unet import SEGMENTATION_CLASSES
from ml.seg_training.config import SegTrainConfig
from ml.training.data import CACHE_READER

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Preprocessed slices of one part: uint8 images and masks, subtype labels, groups."""

    samples: list[SegSample]
    images: np.ndarray
    masks: np.ndarray

    @property
    def subtypes(self) -> np.ndarray:
        return np.array([s.subtypes for s in self.samples], np.float32).reshape(-1, len(SUBTYPES))

    @property
    def mask_known(self) -> np.ndarray:
        return np.array([s.mask_known for s in self.samples], np.float32)

    @property
    def groups(self) -> list[str]:
        return [s.group for s in self.samples]

    def subset(self, keep: Sequence[bool] | np.ndarray) -> Prepared:
        chosen = np.flatnonzero(np.asarray(keep, bool))
        return Prepared([self.samples[i] for i in chosen], self.images[chosen], self.masks[chosen])


def merge(first: Prepared, second: Prepared) -> Prepared:
    """Two parts as one (for measures pooled over collections)."""
    return Prepared(
        [*first.samples, *second.samples],
        np.concatenate([first.images, second.images]),
        np.concatenate([first.masks, second.masks]),
    )


def prepare(samples: Sequence[SegSample], config: PreprocessConfig, cache_dir: Path | None) -> Prepared:
    """Preprocess every slice and carry its mask onto the model grid (cached on disk)."""
    samples = list(samples)
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(CACHE_READER.encode())
    for sample in samples:
        digest.update(f"{sample.path}|{sample.mask_path}|{sample.hounsfield_png}".encode())
    cache_path = Path(cache_dir) / f"segmentation-{digest.hexdigest()[:16]}.npz" if cache_dir else None
    if cache_path is not None and cache_path.is_file():
        cached = np.load(cache_path)
        return Prepared(samples, cached["images"], cached["masks"])
    size = config.image_size
    images = np.zeros((len(samples), size, size), np.uint8)
    masks = np.zeros((len(samples), size, size), np.uint8)
    for index, sample in enumerate(samples):
        images[index], masks[index], _ = preprocess_pair(sample, config)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache_path, images=images, masks=masks)
    return Prepared(samples, images, masks)


def _source(part: Prepared, seed: int) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices(
        (part.images[..., np.newaxis], part.masks, part.subtypes, part.mask_known)
    )
    return dataset.shuffle(len(part.samples), seed=seed, reshuffle_each_iteration=True).repeat()


def training_data(
    masked: Prepared, normal: Prepared, weak: Prepared, config: SegTrainConfig, augmenter: Augmenter
) -> tf.data.Dataset:
    weights = [config.mix_masked, config.mix_normal, max(0.0, 1.0 - config.mix_masked - config.mix_normal)]
    parts = [(masked, weights[0]), (normal, weights[1]), (weak, weights[2])]
    sources = [
        _source(part, config.seed + i) for i, (part, w) in enumerate(parts) if len(part.samples) and w > 0
    ]
    mix = [w for part, w in parts if len(part.samples) and w > 0]
    dataset = tf.data.Dataset.sample_from_datasets(sources, weights=mix, seed=config.seed)
    dataset = dataset.batch(config.batch_size, drop_remainder=True)

    def augment(
        images: tf.Tensor, masks: tf.Tensor, subtypes: tf.Tensor, known: tf.Tensor
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        images = tf.cast(images, tf.float32) / 255.0
        one_hot = tf.one_hot(tf.cast(masks, tf.int32), SEGMENTATION_CLASSES)
        stacked = augmenter.geometric(tf.concat([images, one_hot], axis=-1))
        images = augmenter.intensity(stacked[..., :1])
        one_hot = stacked[..., 1:]
        valid = tf.ones_like(one_hot[..., :1]) * tf.reshape(known, [-1, 1, 1, 1])
        return images, {"mask": tf.concat([one_hot, valid], axis=-1), "subtypes": subtypes}

    return dataset.map(augment).prefetch(tf.data.AUTOTUNE)


@dataclass
class SegData:
    """The training data of one run: bhsd_seg split by volume, and every part preprocessed.

    ``parts`` are named ``bhsd_<split>`` and ``ct_ich_<split>``; ``normal`` holds each CT-ICH
    split's slices whose (empty) mask is known, and ``weak`` the CT-ICH training slices known only
    by their subtype labels.
    """

    bhsd: dict[str, list[SegSample]]
    parts: dict[str, Prepared]
    normal: dict[str, Prepared]
    weak: Prepared


def read_data(
    config: SegTrainConfig,
    data_dir: Path,
    output_dir: Path,
    classifier_card: dict[str, Any],
    preprocess_config: PreprocessConfig,
    cache_dir: Path | None,
) -> SegData:
    """Split bhsd_seg by volume and CT-ICH as the classifier did, write the manifest, preprocess."""
    classifier_dir = Path(config.classifier_dir)
    bhsd = volume_split(read_bhsd(data_dir), config.validation_volumes, config.test_volumes, config.seed)
    ct_ich_samples = read_ct_ich_subtypes(data_dir)
    if config.max_ct_ich is not None:
        rng = np.random.default_rng(config.seed)
        keep = sorted(
            rng.choice(len(ct_ich_samples), min(config.max_ct_ich, len(ct_ich_samples)), replace=False)
        )
        ct_ich_samples = [ct_ich_samples[i] for i in keep]
    ct_ich = split_ct_ich_by_manifest(ct_ich_samples, classifier_dir / "split_manifest.json")
    manifest = {
        "seed": config.seed,
        "bhsd_seg_volumes": {part: sorted({s.group for s in members}) for part, members in bhsd.items()},
        "ct_ich": f"patient split of {classifier_card['name']} {classifier_card['version']} (its split_manifest.json)",
    }
    (output_dir / "split_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")

    parts = {f"bhsd_{name}": prepare(members, preprocess_config, cache_dir) for name, members in bhsd.items()}
    parts.update(
        {f"ct_ich_{name}": prepare(members, preprocess_config, cache_dir) for name, members in ct_ich.items()}
    )
    normal = {
        name: parts[f"ct_ich_{name}"].subset(parts[f"ct_ich_{name}"].mask_known == 1) for name in ct_ich
    }
    weak = parts["ct_ich_train"].subset(parts["ct_ich_train"].mask_known == 0)
    for name, part in parts.items():
        logger.info(
            "%s: %d slices, %d with blood", name, len(part.samples), sum(s.any_blood for s in part.samples)
        )
    return SegData(bhsd=bhsd, parts=parts, normal=normal, weak=weak)
