"""Command line: do the neighbouring slices of a series, as extra input channels, help the classifier?

Continues a trained one-channel classifier (``--init-from``, by default ich-compact 1.1.0) as a
three-channel network reading ``[slice above, slice, slice below]``: the first convolution reads
the middle channel with the source's weights and the neighbours with weights that start at zero,
so before the first step the network answers exactly as the one it came from. CT-ICH slices get
their series neighbours (a slice at either end of its series repeats itself); a single image
(``head_ct``) repeats itself in all three channels, as a single uploaded slice would. With
``--single-share`` a share of the CT-ICH training slices is shown as single images too, and the
neighbours swap places at random, so the network depends on neither the series nor its
direction. Each slice is preprocessed on its own, as the service preprocesses every slice of a
series. On the validation split only, it reports per epoch and for the best epoch the CT-ICH
slice AUC with the neighbours and as single images, head_ct's AUC, and the normal CT-ICH
validation patients cleared at the study threshold that flags every bleeding one::

    python -m ml.neighbour_experiment --output artifacts/experiments/neighbours-a

The test split is not read.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.callbacks import TimeBudget
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.datasets import Sample, default_data_dir, read_datasets
from ml.data.preprocessing import PreprocessConfig
from ml.data.splits import load_manifest, select
from ml.density_experiment import DEFAULT_INIT, inflate, normals_cleared, slice_aucs
from ml.model_io import predict_probabilities
from ml.models.classifier import build_classifier
from ml.training.data import balanced_sample_weights, preprocess_samples

logger = logging.getLogger(__name__)

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


class ValidationAuc(keras.callbacks.Callback):
    """Adds ``val_ct_ich_auc`` (with neighbours), ``val_ct_ich_auc_single`` and
    ``val_head_ct_auc`` to each epoch's logs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> None:
        super().__init__()
        self.images, self.labels, self.sources = images, labels, list(sources)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        series = slice_aucs(predict_probabilities(self.model, self.images), self.labels, self.sources)
        single = slice_aucs(
            predict_probabilities(self.model, as_single(self.images)), self.labels, self.sources
        )
        if logs is not None:
            logs["val_ct_ich_auc"] = series["ct_ich"]
            logs["val_ct_ich_auc_single"] = single["ct_ich"]
            logs["val_head_ct_auc"] = series["head_ct"]
        logger.info("epoch %d: validation AUC with neighbours %s, single %s", epoch + 1, series, single)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--init-from", type=Path, default=DEFAULT_INIT, help="a classifier bundle")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--single-share", type=float, default=0.3)
    parser.add_argument("--time-budget-min", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    keras.utils.set_random_seed(args.seed)
    started = time.monotonic()

    card = json.loads((args.init_from / "model_card.json").read_text(encoding="utf-8"))
    config = PreprocessConfig.from_dict(card["preprocessing"])
    train_config = json.loads((args.init_from / "train_config.json").read_text(encoding="utf-8"))
    samples = read_datasets(args.data_dir or default_data_dir(), train_config["datasets"])
    manifest = load_manifest(args.init_from / "split_manifest.json")
    parts = {name: select(samples, manifest[name]) for name in ("train", "validation")}
    arrays = {
        name: stacked(preprocess_samples(members, config, args.cache_dir), neighbour_indices(members))
        for name, members in parts.items()
    }
    labels = {name: np.array([s.label for s in members], np.int32) for name, members in parts.items()}
    sources = {name: [s.dataset for s in members] for name, members in parts.items()}
    logger.info("Prepared %s in %.0f s.", {k: v.shape for k, v in arrays.items()}, time.monotonic() - started)

    source = keras.saving.load_model(args.init_from / "model.keras", compile=False)
    size = config.image_size
    model = build_classifier((size, size, 3), "compact", train_config["width"], train_config["dropout"])
    inflate(source, model, position=1)
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=1e-4),
        loss=keras.losses.BinaryCrossentropy(),
    )
    weights = balanced_sample_weights(parts["train"], by_dataset=train_config.get("balance_sources", False))
    train_data = training_data(
        arrays["train"], labels["train"], weights, args.batch_size, args.single_share, args.seed
    )
    args.output.mkdir(parents=True, exist_ok=True)
    validation = arrays["validation"].astype(np.float32) / 255.0
    model.fit(
        train_data,
        epochs=args.epochs,
        verbose=2,
        callbacks=[
            ValidationAuc(validation, labels["validation"], sources["validation"]),
            keras.callbacks.ModelCheckpoint(
                args.output / "model.keras", monitor="val_ct_ich_auc", mode="max", save_best_only=True
            ),
            keras.callbacks.EarlyStopping(monitor="val_ct_ich_auc", mode="max", patience=args.patience),
            keras.callbacks.CSVLogger(str(args.output / "training_log.csv")),
            TimeBudget(args.time_budget_min),
        ],
    )
    best = keras.saving.load_model(args.output / "model.keras", compile=False)
    report: dict[str, Any] = {
        "command": "python -m ml.neighbour_experiment " + " ".join(argv or []),
        "validation": {},
    }
    for name, probabilities in (
        ("start (one channel)", predict_probabilities(source, validation[..., 1:2])),
        ("with neighbours", predict_probabilities(best, validation)),
        ("single images", predict_probabilities(best, as_single(validation))),
    ):
        report["validation"][name] = {
            "slice_auc": slice_aucs(probabilities, labels["validation"], sources["validation"]),
            "ct_ich_studies": normals_cleared(probabilities, parts["validation"]),
        }
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    (args.output / "validation_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
