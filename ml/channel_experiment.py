"""The harness of the input experiments (:mod:`ml.density_experiment`,
:mod:`ml.neighbour_experiment`, :mod:`ml.quarter_turn_experiment`): continue a trained
one-channel classifier, with more input channels where the experiment adds some, and judge it on
the validation split on its inputs as they are and as the experiment changes them (the extra
channels emptied, the slice turned).

The source's first convolution reads one channel of the new network (``position``); the other
channels' weights start at zero, so before the first step the network answers exactly as the
source (:func:`inflate`); with ``--from-scratch`` the network starts from new weights and only
the source's patients, preprocessing and threshold are used. It learns on the source's own training patients (its
``split_manifest.json``); every epoch logs the CT-ICH and head_ct validation AUC on the inputs as
they are and changed, and the checkpoint follows the CT-ICH AUC as they are. The report gives,
for the source, the best checkpoint and the same checkpoint on changed inputs, the slice AUC per
collection and the normal CT-ICH validation patients cleared at the highest study threshold that
flags every bleeding one; and how far the change moves the best checkpoint's probability (mean
change, decisions flipped at the source's threshold). The test split is not read.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.callbacks import TimeBudget
from ml.data.datasets import Sample, default_data_dir, read_datasets
from ml.data.preprocessing import PreprocessConfig
from ml.data.splits import load_manifest, select
from ml.evaluation.metrics import binary_metrics, choose_threshold
from ml.evaluation.study import compare_aggregations
from ml.model_io import predict_probabilities
from ml.models.classifier import build_classifier
from ml.training.data import balanced_sample_weights

logger = logging.getLogger(__name__)

DEFAULT_INIT = Path("model_store/ich-compact/1.1.0")


@dataclass(frozen=True)
class ChannelExperiment:
    """One experiment: how its inputs are built, batched and taken away.

    Attributes:
        prog: its command, e.g. ``"python -m ml.density_experiment"``.
        channels: input channels of the new network.
        position: the channel the source's first convolution reads.
        as_is_name, changed_name: the report's names for the inputs as they are and changed.
        arrays: uint8 ``N x S x S x channels`` inputs of the given samples (cache folder last).
        changed: float inputs as the experiment changes them (the extra channels emptied, the
            slice turned).
        batches: shuffled, augmented training batches from (inputs, labels, weights, batch size,
            the share of training images changed, seed).
        share_help: what ``--share`` means for this experiment.
        minutes: the default time budget.
    """

    prog: str
    channels: int
    position: int
    as_is_name: str
    changed_name: str
    arrays: Callable[[Sequence[Sample], PreprocessConfig, Path], np.ndarray]
    changed: Callable[[np.ndarray], np.ndarray]
    batches: Callable[[np.ndarray, np.ndarray, np.ndarray, int, float, int], tf.data.Dataset]
    share_help: str
    minutes: float


def inflate(source: keras.Model, target: keras.Model, position: int = 0) -> None:
    """Copy a one-channel classifier into a twin with more input channels: the source's first
    convolution reads channel ``position``, and the other channels' weights are zero, so the
    twin answers as the source until it learns."""
    for layer in target.layers:
        weights = source.get_layer(layer.name).get_weights() if layer.weights else []
        if layer.name == "stem_conv":
            kernel = weights[0]
            channels = layer.get_weights()[0].shape[2]
            widened = np.zeros((*kernel.shape[:2], channels, kernel.shape[3]), kernel.dtype)
            widened[:, :, position] = kernel[:, :, 0]
            weights = [widened, *weights[1:]]
        if weights:
            layer.set_weights(weights)


def slice_aucs(probabilities: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> dict[str, float]:
    """Slice AUC per collection."""
    where = np.array(sources)
    return {
        name: round(float(binary_metrics(labels[where == name], probabilities[where == name], 0.5)["auc"]), 4)
        for name in sorted(set(sources))
    }


def normals_cleared(
    probabilities: np.ndarray, samples: Sequence[Sample], aggregation: str = "top3_mean"
) -> dict[str, Any]:
    """CT-ICH patients: at the highest study threshold that flags every bleeding patient, how
    many normal patients are cleared."""
    rows = [index for index, sample in enumerate(samples) if sample.dataset == "ct_ich"]
    patients = compare_aggregations(
        [samples[i].label for i in rows], probabilities[rows], [samples[i].group for i in rows]
    )[aggregation]
    labels, scores = patients["labels"], patients["probabilities"]
    threshold = choose_threshold(labels, scores, 1.0)
    return {
        "bleeding_patients": int(np.sum(labels == 1)),
        "normal_patients": int(np.sum(labels == 0)),
        "normal_cleared": int(np.sum(scores[labels == 0] < threshold)),
        "threshold": round(float(threshold), 4),
    }


class ValidationAuc(keras.callbacks.Callback):
    """Adds ``val_ct_ich_auc`` (inputs as they are), ``val_ct_ich_auc_changed`` and
    ``val_head_ct_auc`` to each epoch's logs."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        sources: Sequence[str],
        changed: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        super().__init__()
        self.images, self.labels, self.sources, self.changed = images, labels, list(sources), changed

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        full = slice_aucs(predict_probabilities(self.model, self.images), self.labels, self.sources)
        bare = slice_aucs(
            predict_probabilities(self.model, self.changed(self.images)), self.labels, self.sources
        )
        if logs is not None:
            logs["val_ct_ich_auc"] = full["ct_ich"]
            logs["val_ct_ich_auc_changed"] = bare["ct_ich"]
            logs["val_head_ct_auc"] = full["head_ct"]
        logger.info("epoch %d: validation AUC %s, changed %s", epoch + 1, full, bare)


def main(experiment: ChannelExperiment, description: str, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=experiment.prog, description=description)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument(
        "--init-from",
        type=Path,
        default=DEFAULT_INIT,
        help="a classifier bundle: its split, preprocessing and threshold, and its weights unless --from-scratch",
    )
    parser.add_argument(
        "--from-scratch", action="store_true", help="start from new weights instead of the bundle's"
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--share", type=float, default=0.3, help=experiment.share_help)
    parser.add_argument("--time-budget-min", type=float, default=experiment.minutes)
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
    arrays = {name: experiment.arrays(members, config, args.cache_dir) for name, members in parts.items()}
    labels = {name: np.array([s.label for s in members], np.int32) for name, members in parts.items()}
    sources = [s.dataset for s in parts["validation"]]
    logger.info("Prepared %s in %.0f s.", {k: v.shape for k, v in arrays.items()}, time.monotonic() - started)

    source = keras.saving.load_model(args.init_from / "model.keras", compile=False)
    size = config.image_size
    model = build_classifier(
        (size, size, experiment.channels), "compact", train_config["width"], train_config["dropout"]
    )
    if not args.from_scratch:
        inflate(source, model, experiment.position)
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=1e-4),
        loss=keras.losses.BinaryCrossentropy(),
    )
    weights = balanced_sample_weights(parts["train"], by_dataset=train_config.get("balance_sources", False))
    train_data = experiment.batches(
        arrays["train"], labels["train"], weights, args.batch_size, args.share, args.seed
    )
    args.output.mkdir(parents=True, exist_ok=True)
    validation = arrays["validation"].astype(np.float32) / 255.0
    model.fit(
        train_data,
        epochs=args.epochs,
        verbose=2,
        callbacks=[
            ValidationAuc(validation, labels["validation"], sources, experiment.changed),
            keras.callbacks.ModelCheckpoint(
                args.output / "model.keras", monitor="val_ct_ich_auc", mode="max", save_best_only=True
            ),
            keras.callbacks.EarlyStopping(monitor="val_ct_ich_auc", mode="max", patience=args.patience),
            keras.callbacks.CSVLogger(str(args.output / "training_log.csv")),
            TimeBudget(args.time_budget_min),
        ],
    )
    best = keras.saving.load_model(args.output / "model.keras", compile=False)
    position = experiment.position
    report: dict[str, Any] = {"command": " ".join([experiment.prog, *(argv or [])]), "validation": {}}
    as_is = predict_probabilities(best, validation)
    changed = predict_probabilities(best, experiment.changed(validation))
    for name, probabilities in (
        ("start", predict_probabilities(source, validation[..., position : position + 1])),
        (experiment.as_is_name, as_is),
        (experiment.changed_name, changed),
    ):
        report["validation"][name] = {
            "slice_auc": slice_aucs(probabilities, labels["validation"], sources),
            "ct_ich_studies": normals_cleared(probabilities, parts["validation"]),
        }
    threshold = float(card["threshold"])
    report["validation"]["change"] = {
        "mean_change": round(float(np.mean(np.abs(as_is - changed))), 4),
        "flipped": round(float(np.mean((as_is >= threshold) != (changed >= threshold))), 4),
        "threshold": threshold,
    }
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    (args.output / "validation_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0
