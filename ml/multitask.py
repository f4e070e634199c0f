"""Training of the three-headed network (``ml.models.multitask``) on every label at once.

Each collection brings what it has, and each loss counts only where its label exists:

| collection | slice label | subtypes | pixels |
| --- | --- | --- | --- |
| ``ct_ich`` | every slice | every slice | normal slices: no blood anywhere; haemorrhage slices: some blood in the head |
| ``head_ct`` | every image | normal images (none) | normal images: no blood; haemorrhage images: some blood in the head |
| ``phe_sich`` | reliable slices (``near_hemorrhage`` ones are left out) | intraparenchymal on boxed slices; none on reliable negatives | no blood outside the box, some blood inside it (the derived blood mask where one is given); reliable negatives: no blood |
| ``bhsd_seg`` | none (every slice is positive: the collection must not become evidence) | from its masks | its masks |

Batches are drawn per collection and label with fixed shares, so that inside each collection
both labels are equally likely and no collection's look changes the odds of haemorrhage.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.preprocessing import PreprocessConfig
from ml.errors import DataError, MissingDataFile
from ml.evaluation.metrics import binary_metrics
from ml.evaluation.segmentation import overlap_counts
from ml.losses import blood_dice, masked_cross_entropy
from ml.models.multitask import build_multitask, transfer_weights
from ml.models.unet import SEGMENTATION_CLASSES
from ml.multitask_data import (
    ARRAYS,
    FLAG_BOX,
    FLAG_VALID,
    INTRAPARENCHYMAL,
    NUM_SUBTYPES,
    PREPARATION,
    READERS,
    Part,
    prepare_parts,
)
from ml.training import TimeBudget, measure_latency

__all__ = [
    "INTRAPARENCHYMAL",
    "NUM_SUBTYPES",
    "PREPARATION",
    "FLAG_BOX",
    "FLAG_VALID",
    "MultitaskConfig",
    "Part",
    "Outputs",
    "Predictor",
    "READERS",
    "mask_loss",
    "prepare_parts",
    "probability_loss",
    "subtype_loss",
    "train_multitask",
]

logger = logging.getLogger(__name__)

COLLECTIONS = ("ct_ich", "head_ct", "phe_sich", "bhsd_seg")


@dataclass
class MultitaskConfig:
    """Hyperparameters; written next to the model as ``train_config.json``."""

    name: str = "ich-multitask"
    version: str = "0.1.0"
    image_size: int = 256
    width: int = 16
    dropout: float = 0.3
    batch_size: int = 16
    steps_per_epoch: int = 40
    epochs: int = 200
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 20
    time_budget_minutes: float = 60.0
    seed: int = 42
    # ct_ich and head_ct keep the patient split of this classifier's manifest, so that every
    # model is compared on the same validation and test patients.
    split_manifest: str = "model_store/ich-compact/1.1.0/split_manifest.json"
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    bhsd_validation_volumes: int = 5
    bhsd_test_volumes: int = 10
    # Share of each batch drawn from each collection; inside a collection, half from each label.
    shares: dict[str, float] = field(
        default_factory=lambda: {"ct_ich": 0.35, "head_ct": 0.1, "phe_sich": 0.35, "bhsd_seg": 0.2}
    )
    collections: tuple[str, ...] = COLLECTIONS
    subtype_loss_weight: float = 0.5
    mask_loss_weight: float = 1.0
    rotate_90: bool = True
    init_from: str | None = None
    # "unet" or "compact" (ml.models.multitask); a trained classifier's encoder and slice head
    # can start a "compact" network (encoder_from).
    backbone: str = "unet"
    encoder_from: str | None = None
    # What stays as it is while the rest learns: "none", "encoder" (the classifier's backbone
    # and slice head: only the decoder and the subtype head learn) or "batchnorm" (every
    # normalisation layer keeps its statistics and scale).
    freeze: str = "none"

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(image_size=self.image_size)


# --- Losses ------------------------------------------------------------------------------------


def probability_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy weighted per slice; ``y_true`` is ``N x 2``: label, weight."""
    label, weight = y_true[:, :1], y_true[:, 1:2]
    p = tf.clip_by_value(y_pred, 1e-6, 1.0 - 1e-6)
    return tf.reduce_sum(weight * -(label * tf.math.log(p) + (1.0 - label) * tf.math.log(1.0 - p)), axis=-1)


def subtype_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy over the subtypes whose label is known; ``y_true`` is ``N x 10``."""
    labels, weights = y_true[:, :NUM_SUBTYPES], y_true[:, NUM_SUBTYPES:]
    p = tf.clip_by_value(y_pred, 1e-6, 1.0 - 1e-6)
    loss = -(labels * tf.math.log(p) + (1.0 - labels) * tf.math.log(1.0 - p))
    return tf.reduce_sum(weights * loss, axis=-1) / float(NUM_SUBTYPES)


def mask_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Pixel loss: cross-entropy and soft Dice where the class is known, and for each region that
    holds some blood (a box, or the head of a haemorrhage slice without a mask) a multiple-
    instance term, ``-log`` of the region's highest blood probability.

    ``y_true`` is ``N x H x W x 8``: one-hot over the six classes, the valid flag, the box flag.
    """
    target = y_true[..., :SEGMENTATION_CLASSES]
    valid = y_true[..., SEGMENTATION_CLASSES]
    box = y_true[..., SEGMENTATION_CLASSES + 1]
    cross_entropy = masked_cross_entropy(target, y_pred, valid)
    dice_of_blood, true_blood = blood_dice(target, y_pred, valid)
    has_blood = tf.cast(tf.reduce_sum(true_blood) > 0, tf.float32)

    blood = 1.0 - y_pred[..., 0]
    in_box = tf.reduce_max(blood * box, axis=[1, 2])
    boxed = tf.cast(tf.reduce_max(box, axis=[1, 2]) > 0, tf.float32)
    instance = -tf.math.log(tf.clip_by_value(in_box, 1e-4, 1.0))
    instance = tf.reduce_sum(instance * boxed) / tf.maximum(tf.reduce_sum(boxed), 1.0)
    return cross_entropy + has_blood * (1.0 - dice_of_blood) + 0.2 * instance


# --- Data --------------------------------------------------------------------------------------


def _stream(part: Part, keep: np.ndarray, seed: int) -> tf.data.Dataset:
    chosen = part.subset(keep)
    columns = tuple(getattr(chosen, name) for name in ARRAYS)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    return dataset.shuffle(len(chosen), seed=seed, reshuffle_each_iteration=True).repeat()


def training_data(parts: dict[str, Part], config: MultitaskConfig, augmenter: Augmenter) -> tf.data.Dataset:
    """Endless batches drawn per collection and label with the configured shares."""
    streams, weights = [], []
    for index, (name, part) in enumerate(sorted(parts.items())):
        share = config.shares.get(name, 0.0)
        if share <= 0 or not len(part):
            continue
        if name == "bhsd_seg":
            cells = [np.ones(len(part), bool)]
        else:
            learnable = part.label_weights > 0
            cells = [learnable & (part.labels == label) for label in (0, 1)]
            cells = [cell for cell in cells if cell.any()]
        for offset, cell in enumerate(cells):
            streams.append(_stream(part, cell, config.seed + 10 * index + offset))
            weights.append(share / len(cells))
    total = sum(weights)
    dataset = tf.data.Dataset.sample_from_datasets(
        streams, weights=[w / total for w in weights], seed=config.seed
    )
    dataset = dataset.batch(config.batch_size, drop_remainder=True)
    rotate = config.rotate_90

    def augment(images, masks, flags, labels, label_weights, subtypes, subtype_weights):
        images = tf.cast(images, tf.float32)[..., tf.newaxis] / 255.0
        one_hot = tf.one_hot(tf.cast(masks, tf.int32), SEGMENTATION_CLASSES)
        flags = tf.cast(flags, tf.int32)
        valid = tf.cast(tf.bitwise.bitwise_and(flags, FLAG_VALID) > 0, tf.float32)[..., tf.newaxis]
        box = tf.cast(tf.bitwise.bitwise_and(flags, FLAG_BOX) > 0, tf.float32)[..., tf.newaxis]
        stacked = tf.concat([images, one_hot, valid, box], axis=-1)
        if rotate:
            # With the flips, a random transpose gives every one of the eight orientations.
            turn = augmenter.chance(tf.shape(stacked)[0], 0.5)
            stacked = turn * tf.transpose(stacked, [0, 2, 1, 3]) + (1.0 - turn) * stacked
        stacked = augmenter.geometric(stacked)
        images = augmenter.intensity(stacked[..., :1])
        # Interpolated flags: only pixels still fully inside count.
        valid = tf.cast(stacked[..., -2:-1] > 0.99, tf.float32)
        box = tf.cast(stacked[..., -1:] > 0.5, tf.float32)
        targets = {
            "probability": tf.stack([labels, label_weights], axis=-1),
            "subtypes": tf.concat([subtypes, subtype_weights], axis=-1),
            "mask": tf.concat([stacked[..., 1:-2], valid, box], axis=-1),
        }
        return images, targets

    return dataset.map(augment, num_parallel_calls=2).prefetch(2)


@dataclass(frozen=True)
class Outputs:
    """The network's answers for every slice of a part: slice probabilities (N,), subtype
    probabilities (N x 5), and per-pixel maps (N x S x S blood probability, or with ``masks``
    N x S x S x 6 class probabilities), float16."""

    probability: np.ndarray
    subtypes: np.ndarray
    maps: np.ndarray

    @property
    def blood(self) -> np.ndarray:
        return self.maps if self.maps.ndim == 3 else (1.0 - self.maps[..., 0]).astype(np.float16)


class Predictor:
    """One compiled forward pass of a multitask model over prepared parts."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def __call__(self, part: Part, masks: bool = False, batch_size: int = 16) -> Outputs:
        probabilities, subtypes, maps = [], [], []
        for start in range(0, len(part), batch_size):
            batch = part.images[start : start + batch_size, :, :, np.newaxis].astype(np.float32) / 255.0
            outputs = self._forward(tf.convert_to_tensor(batch))
            probabilities.append(outputs["probability"].numpy().ravel())
            subtypes.append(outputs["subtypes"].numpy())
            mask = outputs["mask"].numpy()
            maps.append((mask if masks else 1.0 - mask[..., 0]).astype(np.float16))
        if not probabilities:
            size = part.images.shape[1]
            shape = (0, size, size, SEGMENTATION_CLASSES) if masks else (0, size, size)
            return Outputs(np.zeros(0), np.zeros((0, NUM_SUBTYPES)), np.zeros(shape, np.float16))
        return Outputs(np.concatenate(probabilities), np.concatenate(subtypes), np.concatenate(maps))


def validation_figures(parts: dict[str, Part], outputs: dict[str, Outputs]) -> dict[str, float]:
    """Per-collection slice AUC (learnable labels only), their mean, the pooled any-blood Dice
    on bhsd_seg at 0.5, and the share of normal CT-ICH slices with no pixel above 0.5."""
    figures: dict[str, float] = {}
    aucs = []
    for name in ("ct_ich", "head_ct", "phe_sich"):
        if name not in parts or not len(parts[name]):
            continue
        part, answer = parts[name], outputs[name]
        keep = part.label_weights > 0
        auc = binary_metrics(part.labels[keep], answer.probability[keep], 0.5)["auc"]
        figures[f"auc_{name}"] = auc
        aucs.append(auc)
        if name == "ct_ich":
            normal = keep & (part.labels == 0)
            figures["clear_ct_ich"] = float(np.mean((answer.blood[normal] > 0.5).sum(axis=(1, 2)) < 10))
    figures["mean_source_auc"] = float(np.mean(aucs)) if aucs else math.nan
    if "bhsd_seg" in parts and len(parts["bhsd_seg"]):
        tp, predicted, truth = overlap_counts(outputs["bhsd_seg"].blood > 0.5, parts["bhsd_seg"].masks > 0)
        figures["dice_bhsd"] = 2 * tp / (predicted + truth) if predicted + truth else math.nan
    return figures


class ValidationScore(keras.callbacks.Callback):
    """Adds the validation figures to the logs and ``val_score``: the mean of the per-collection
    slice AUCs plus a tenth of the bhsd_seg Dice (the checkpoint and early-stopping measure)."""

    def __init__(self, parts: dict[str, Part]) -> None:
        super().__init__()
        self.parts = parts
        self.predictor: Predictor | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.predictor = Predictor(self.model)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        predictor = self.predictor or Predictor(self.model)
        outputs = {name: predictor(part) for name, part in self.parts.items()}
        figures = validation_figures(self.parts, outputs)
        score = np.nan_to_num(figures["mean_source_auc"]) + 0.1 * np.nan_to_num(figures.get("dice_bhsd", 0.0))
        logs.update({f"val_{key}": value for key, value in figures.items()}, val_score=float(score))
        logger.info(
            "epoch %d: %s, score %.4f",
            epoch + 1,
            ", ".join(f"{key} {value:.3f}" for key, value in figures.items()),
            score,
        )


FREEZE_CHOICES = ("none", "encoder", "batchnorm")
# The layers a compact network shares with the classifier it starts from.
_ENCODER_PREFIXES = ("stem_", "block")


def freeze_layers(model: keras.Model, what: str) -> list[str]:
    """Stop the named part of ``model`` from learning (see ``MultitaskConfig.freeze``) and let
    every other layer learn (a saved model keeps what was frozen when it was saved); a frozen
    batch normalisation layer also uses its stored statistics in training."""
    if what not in FREEZE_CHOICES:
        raise ValueError(f"freeze must be one of {list(FREEZE_CHOICES)}, got {what!r}.")
    frozen = []
    for layer in model.layers:
        layer.trainable = True
        if what == "encoder":
            chosen = layer.name.startswith(_ENCODER_PREFIXES) or layer.name == "logit"
        else:
            chosen = what == "batchnorm" and isinstance(layer, keras.layers.BatchNormalization)
        if chosen:
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def _write_split_manifest(parts: dict[str, dict[str, Part]], seed: int, path: Path) -> None:
    patients = {
        split: {"patients": sorted({g for part in members.values() for g in part.groups})}
        for split, members in parts.items()
    }
    path.write_text(json.dumps({"seed": seed, **patients}, indent=1), encoding="utf-8")


def _check_model_files(config: MultitaskConfig) -> None:
    for option, named in (("--init-from", config.init_from), ("--encoder-from", config.encoder_from)):
        if named and not Path(named).is_file():
            raise MissingDataFile(f"{option}: no model file at {named}.")


def _starting_model(config: MultitaskConfig) -> keras.Model:
    """A continued run's saved network, or a new one (its encoder copied from a classifier
    when ``encoder_from`` names one)."""
    if config.init_from:
        return keras.models.load_model(config.init_from, compile=False)
    size = config.image_size
    model = build_multitask(
        (size, size, 1), width=config.width, dropout=config.dropout, backbone=config.backbone
    )
    if config.encoder_from:
        source = keras.models.load_model(config.encoder_from, compile=False)
        copied = transfer_weights(source, model)
        if not copied:
            raise DataError(f"{config.encoder_from} shares no layer with a {config.backbone!r} network.")
        logger.info("Started %d layers from %s", len(copied), config.encoder_from)
    return model


def train_multitask(
    config: MultitaskConfig, data_dir: Path, output_dir: Path, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Train, keep the best epoch by ``val_score``, and write the model, its log, its split and
    its validation predictions into ``output_dir``. The test split is not looked at."""
    started = time.monotonic()
    _check_model_files(config)
    keras.utils.set_random_seed(config.seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=1), encoding="utf-8")
    parts = prepare_parts(data_dir, config, cache_dir)
    _write_split_manifest(parts, config.seed, output_dir / "split_manifest.json")
    size = config.image_size
    model = _starting_model(config)
    frozen = freeze_layers(model, config.freeze)
    logger.info("Frozen (%s): %d layers", config.freeze, len(frozen))
    augmenter = Augmenter(AugmentationConfig(), seed=config.seed)
    data = training_data(parts["train"], config, augmenter)
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
        loss={"probability": probability_loss, "subtypes": subtype_loss, "mask": mask_loss},
        loss_weights={
            "probability": 1.0,
            "subtypes": config.subtype_loss_weight,
            "mask": config.mask_loss_weight,
        },
        jit_compile=False,
    )
    budget = TimeBudget(config.time_budget_minutes)
    callbacks: list[keras.callbacks.Callback] = [
        ValidationScore(parts["validation"]),
        keras.callbacks.ModelCheckpoint(
            str(output_dir / "model.keras"), monitor="val_score", mode="max", save_best_only=True
        ),
        keras.callbacks.ModelCheckpoint(str(output_dir / "last.keras")),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_score", mode="max", factor=0.5, patience=6, min_lr=5e-5
        ),
        keras.callbacks.EarlyStopping(monitor="val_score", mode="max", patience=config.patience),
        keras.callbacks.CSVLogger(str(output_dir / "training_log.csv")),
        budget,
    ]
    history = model.fit(
        data, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, callbacks=callbacks, verbose=2
    )
    best = keras.models.load_model(output_dir / "model.keras", compile=False)
    predictor = Predictor(best)
    outputs = {name: predictor(part) for name, part in parts["validation"].items()}
    figures = validation_figures(parts["validation"], outputs)
    predictions: dict[str, Any] = {}
    for name, part in parts["validation"].items():
        predictions[f"{name}_probability"] = outputs[name].probability
        predictions[f"{name}_subtypes"] = outputs[name].subtypes
        predictions[f"{name}_labels"] = part.labels
        predictions[f"{name}_weights"] = part.label_weights
        predictions[f"{name}_groups"] = np.array(part.groups)
        predictions[f"{name}_ids"] = np.array(part.ids)
    np.savez(output_dir / "validation_predictions.npz", **predictions)
    scores = history.history.get("val_score", [])
    summary = {
        "config": asdict(config),
        "epochs_run": len(scores),
        "best_epoch": int(np.argmax(scores)) + 1 if scores else None,
        "stopped_by_time_budget": budget.stopped_early,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "validation": figures,
        "parameters": int(best.count_params()),
        "latency_ms": round(measure_latency(best, size), 1),
        "counts": {split: {n: len(p) for n, p in members.items()} for split, members in parts.items()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": {
            "python": sys.version.split()[0],
            "tensorflow": tf.__version__,
            "platform": platform.platform(),
        },
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
