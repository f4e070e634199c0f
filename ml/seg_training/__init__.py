"""Training and evaluation of the segmentation-and-subtype model (``ml.models.unet``).

Data: ``bhsd_seg`` slices with masks (split by volume), CT-ICH normal slices as examples of
"no blood" and CT-ICH haemorrhage slices for the subtype head, CT-ICH kept in the patient split
of the classifier. Loss: cross-entropy plus soft Dice (any blood and per subtype) for the mask,
binary cross-entropy for the subtypes. The post-processing (blood threshold, smallest kept
component) is chosen on validation volumes and normal validation slices, then the held-out
volumes and test slices are measured once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.callbacks import TimeBudget
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.preprocessing import PreprocessConfig
from ml.data.segmentation import (
    SUBTYPE_COLOURS,
    SUBTYPES,
    SegSample,
    preprocess_pair,
    read_bhsd,
    read_ct_ich_subtypes,
    split_ct_ich_by_manifest,
    volume_split,
)
from ml.evaluation.segmentation import overlap_counts
from ml.model_io import read_card
from ml.models.unet import SEGMENTATION_CLASSES, build_unet
from ml.seg_reports import (
    FEW_POSITIVES,
    ct_ich_detection_report,
    evaluate_segmentation,
    normal_slices_report,
    pointing_game,
    pointing_game_limitations,
    subtype_report,
)
from ml.segmenter import class_map_from_probabilities
from ml.training import FitResult, measure_latency

__all__ = [
    "SegTrainConfig",
    "ct_ich_detection_report",
    "evaluate_segmentation",
    "mask_loss",
    "merge",
    "predict_masks",
    "pointing_game",
    "prepare",
    "train_segmentation",
]

logger = logging.getLogger(__name__)

BLOOD_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_COMPONENTS_PX = (0, 5, 10, 20, 40, 80)
# Required share of normal validation slices without predicted blood when choosing the
# post-processing (above the 0.90 target, as a margin).
NORMAL_CLEAR_GOAL = 0.93


@dataclass
class SegTrainConfig:
    """Hyperparameters; written next to the model as ``train_config.json``."""

    name: str = "ich-unet"
    version: str = "1.0.0"
    classifier_dir: str = "model_store/ich-compact/1.0.0"
    width: int = 16
    batch_size: int = 16
    steps_per_epoch: int = 16
    epochs: int = 60
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 15
    time_budget_minutes: float = 30.0
    validation_volumes: int = 5
    test_volumes: int = 10
    mix_masked: float = 0.45
    mix_normal: float = 0.30
    subtype_loss_weight: float = 0.5
    seed: int = 42
    bootstrap_resamples: int = 1000
    max_ct_ich: int | None = None
    init_from: str | None = None


def mask_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Cross-entropy plus soft Dice on the pixels of slices whose mask is known.

    ``y_true`` is ``B x H x W x 7``: one-hot over the six classes, then a channel that is 1
    where the slice's mask may be learnt from (0 for haemorrhage slices without a mask).
    """
    target = y_true[..., :SEGMENTATION_CLASSES]
    valid = y_true[..., SEGMENTATION_CLASSES]
    probabilities = tf.clip_by_value(y_pred, 1e-6, 1.0)
    cross_entropy = -tf.reduce_sum(target * tf.math.log(probabilities), axis=-1)
    cross_entropy = tf.reduce_sum(cross_entropy * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)

    smooth = 1.0
    true_blood = tf.reduce_sum(target[..., 1:], axis=-1) * valid
    predicted_blood = tf.reduce_sum(y_pred[..., 1:], axis=-1) * valid
    blood_dice = (2.0 * tf.reduce_sum(true_blood * predicted_blood) + smooth) / (
        tf.reduce_sum(true_blood) + tf.reduce_sum(predicted_blood) + smooth
    )
    weights = valid[..., tf.newaxis]
    class_true = tf.reduce_sum(target[..., 1:] * weights, axis=[0, 1, 2])
    class_pred = tf.reduce_sum(y_pred[..., 1:] * weights, axis=[0, 1, 2])
    class_overlap = tf.reduce_sum(target[..., 1:] * y_pred[..., 1:] * weights, axis=[0, 1, 2])
    class_dice = (2.0 * class_overlap + smooth) / (class_true + class_pred + smooth)
    present = tf.cast(class_true > 0, tf.float32)
    mean_class_dice = tf.reduce_sum(class_dice * present) / tf.maximum(tf.reduce_sum(present), 1.0)
    has_classes = tf.cast(tf.reduce_sum(present) > 0, tf.float32)
    return cross_entropy + (1.0 - blood_dice) + 0.5 * has_classes * (1.0 - mean_class_dice)


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


def _training_data(
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


def predict_masks(
    model: keras.Model, images: np.ndarray, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    masks, subtypes = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size, :, :, np.newaxis].astype(np.float32) / 255.0
        outputs = forward(tf.convert_to_tensor(batch))
        masks.append(outputs["mask"].numpy().astype(np.float16))
        subtypes.append(outputs["subtypes"].numpy())
    return np.concatenate(masks), np.concatenate(subtypes)


def pooled_blood_dice(probabilities: np.ndarray, truth: np.ndarray, threshold: float, min_px: int) -> float:
    counts = np.zeros(3)
    for index in range(len(truth)):
        predicted = (
            class_map_from_probabilities(probabilities[index].astype(np.float32), threshold, min_px) > 0
        )
        counts += overlap_counts(predicted, truth[index] > 0)
    return 2 * counts[0] / (counts[1] + counts[2]) if counts[1] + counts[2] else math.nan


def clear_rate(probabilities: np.ndarray, threshold: float, min_px: int) -> float:
    clear = [
        not class_map_from_probabilities(p.astype(np.float32), threshold, min_px).any() for p in probabilities
    ]
    return float(np.mean(clear)) if clear else math.nan


def _mean_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    values = [
        roc_auc_score(labels[:, k], probabilities[:, k])
        for k in range(labels.shape[1])
        if 0 < labels[:, k].sum() < len(labels)
    ]
    return float(np.mean(values)) if values else math.nan


class ValidationScore(keras.callbacks.Callback):
    """Adds ``val_dice``, ``val_clear``, ``val_subtype_auc`` and ``val_score`` to the logs.

    Score = pooled any-blood Dice on validation volumes + a quarter of the mean subtype AUC on
    CT-ICH validation slices, minus the shortfall of clear normal slices below the goal.
    """

    def __init__(self, masked: Prepared, ct_ich: Prepared) -> None:
        super().__init__()
        self.masked, self.ct_ich = masked, ct_ich

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        masks, _ = predict_masks(self.model, self.masked.images)
        ct_ich_masks, subtypes = predict_masks(self.model, self.ct_ich.images)
        normal_masks = ct_ich_masks[self.ct_ich.mask_known == 1]
        dice_value = pooled_blood_dice(masks, self.masked.masks, 0.5, 0)
        clear = clear_rate(normal_masks, 0.5, 10)
        auc = _mean_auc(self.ct_ich.subtypes, subtypes)
        score = np.nan_to_num(dice_value) + 0.25 * np.nan_to_num(auc) - max(0.0, NORMAL_CLEAR_GOAL - clear)
        logs.update(val_dice=dice_value, val_clear=clear, val_subtype_auc=auc, val_score=float(score))
        logger.info(
            "epoch %d: val Dice %.3f, normal slices clear %.3f, subtype AUC %.3f, score %.3f",
            epoch + 1,
            dice_value,
            clear,
            auc,
            score,
        )


def choose_postprocessing(
    masked_probabilities: np.ndarray, truth: np.ndarray, normal_probabilities: np.ndarray
) -> dict[str, Any]:
    """Blood threshold and smallest component with the best validation Dice among those that
    keep at least ``NORMAL_CLEAR_GOAL`` of normal slices clear (else the clearest)."""
    table = []
    for threshold in BLOOD_THRESHOLDS:
        for min_px in MIN_COMPONENTS_PX:
            table.append(
                {
                    "blood_threshold": threshold,
                    "min_component_px": min_px,
                    "dice": round(
                        float(pooled_blood_dice(masked_probabilities, truth, threshold, min_px)), 4
                    ),
                    "clear": round(clear_rate(normal_probabilities, threshold, min_px), 4),
                }
            )
    allowed = [row for row in table if row["clear"] >= NORMAL_CLEAR_GOAL]
    if allowed:
        best = max(allowed, key=lambda row: (np.nan_to_num(row["dice"]), row["clear"]))
    else:
        best = max(table, key=lambda row: (row["clear"], np.nan_to_num(row["dice"])))
    return {
        "chosen": best,
        "rule": f"best validation Dice with >= {NORMAL_CLEAR_GOAL} of normal slices clear",
    }


@dataclass
class _SegData:
    """The training data of one run: bhsd_seg split by volume, and every part preprocessed.

    ``parts`` are named ``bhsd_<split>`` and ``ct_ich_<split>``; ``normal`` holds each CT-ICH
    split's slices whose (empty) mask is known, and ``weak`` the CT-ICH training slices known only
    by their subtype labels.
    """

    bhsd: dict[str, list[SegSample]]
    parts: dict[str, Prepared]
    normal: dict[str, Prepared]
    weak: Prepared


def _read_data(
    config: SegTrainConfig,
    data_dir: Path,
    output_dir: Path,
    classifier_card: dict[str, Any],
    preprocess_config: PreprocessConfig,
    cache_dir: Path | None,
) -> _SegData:
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
    return _SegData(bhsd=bhsd, parts=parts, normal=normal, weak=weak)


def _compiled_unet(config: SegTrainConfig, size: int) -> keras.Model:
    """A new U-Net (or the weights of ``init_from``), compiled with its two losses."""
    model = build_unet((size, size, 1), config.width)
    if config.init_from:
        # Continue from an earlier run of the same architecture (weights only; a fresh
        # optimiser; the same split and post-processing rule).
        model.set_weights(keras.saving.load_model(config.init_from, compile=False).get_weights())
        logger.info("Initialised from %s", config.init_from)
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
        loss={"mask": mask_loss, "subtypes": keras.losses.BinaryCrossentropy()},
        loss_weights={"mask": 1.0, "subtypes": config.subtype_loss_weight},
    )
    return model


def _fit(config: SegTrainConfig, model: keras.Model, data: _SegData, output_dir: Path) -> FitResult:
    """Fit on the mixed, augmented sources; keep the checkpoint with the best validation score."""
    augmentation = AugmentationConfig(rotation_degrees=25.0, zoom_fraction=0.2, resample_probability=0.25)
    train_data = _training_data(
        data.parts["bhsd_train"],
        data.normal["train"],
        data.weak,
        config,
        Augmenter(augmentation, config.seed),
    )
    checkpoint_path = output_dir / "model.keras"
    budget = TimeBudget(config.time_budget_minutes)
    callbacks: list[keras.callbacks.Callback] = [
        ValidationScore(data.parts["bhsd_validation"], data.parts["ct_ich_validation"]),
        keras.callbacks.ModelCheckpoint(
            checkpoint_path, monitor="val_score", mode="max", save_best_only=True
        ),
        keras.callbacks.EarlyStopping(monitor="val_score", mode="max", patience=config.patience),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_score", mode="max", factor=0.5, patience=6, min_lr=1e-5
        ),
        keras.callbacks.CSVLogger(str(output_dir / "training_log.csv")),
        budget,
    ]
    fit_started = time.monotonic()
    history = model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        # The dataset shuffles and mixes its sources itself.
        shuffle=False,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    training_seconds = time.monotonic() - fit_started
    return FitResult(
        model=keras.saving.load_model(checkpoint_path, compile=False),
        augmentation=augmentation,
        epochs_run=len(history.history.get("loss", [])),
        stopped_by_time_budget=budget.stopped_early,
        seconds=training_seconds,
    )


def _measure(
    config: SegTrainConfig, model: keras.Model, data: _SegData
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose the post-processing on validation, then measure validation and, once, test.

    Returns the post-processing (the chosen rule and the candidates) and the metrics.
    """
    parts, normal = data.parts, data.normal
    validation_masks, _ = predict_masks(model, parts["bhsd_validation"].images)
    validation_normal, _ = predict_masks(model, normal["validation"].images)
    postprocessing = choose_postprocessing(
        validation_masks, parts["bhsd_validation"].masks, validation_normal
    )
    chosen = postprocessing["chosen"]
    threshold, min_px = float(chosen["blood_threshold"]), int(chosen["min_component_px"])
    logger.info("Post-processing chosen on validation: %s", chosen)

    test_masks, test_subtypes_bhsd = predict_masks(model, parts["bhsd_test"].images)
    test_normal, _ = predict_masks(model, normal["test"].images)
    test_ct_ich_masks, test_subtypes = predict_masks(model, parts["ct_ich_test"].images)
    _, validation_subtypes = predict_masks(model, parts["ct_ich_validation"].images)
    resamples, seed = config.bootstrap_resamples, config.seed
    metrics = {
        "validation": {
            "segmentation": evaluate_segmentation(
                validation_masks, parts["bhsd_validation"], threshold, min_px, resamples, seed
            ),
            "normal_ct_ich_slices": normal_slices_report(validation_normal, threshold, min_px),
            "subtypes_ct_ich": subtype_report(
                parts["ct_ich_validation"], validation_subtypes, resamples, seed
            ),
        },
        "test": {
            "segmentation": evaluate_segmentation(
                test_masks, parts["bhsd_test"], threshold, min_px, resamples, seed
            ),
            "normal_ct_ich_slices": normal_slices_report(test_normal, threshold, min_px),
            "subtypes_ct_ich": subtype_report(parts["ct_ich_test"], test_subtypes, resamples, seed),
            "subtypes_bhsd_seg": subtype_report(parts["bhsd_test"], test_subtypes_bhsd, resamples, seed),
            "subtypes_held_out": subtype_report(
                merge(parts["ct_ich_test"], parts["bhsd_test"]),
                np.concatenate([test_subtypes, test_subtypes_bhsd]),
                resamples,
                seed,
            ),
            "ct_ich_slices": ct_ich_detection_report(
                parts["ct_ich_test"], test_ct_ich_masks, threshold, min_px, resamples, seed
            ),
        },
    }
    return postprocessing, metrics


def _reproduce_command(config: SegTrainConfig) -> str:
    """The ``python -m ml.train_seg`` command line that trains with this configuration."""
    return (
        f"python -m ml.train_seg --name {config.name} --version {config.version} "
        f"--classifier-dir {config.classifier_dir} --epochs {config.epochs} "
        f"--time-budget-min {config.time_budget_minutes:g} --seed {config.seed}"
        + (
            f" --learning-rate {config.learning_rate:g}"
            if config.learning_rate != SegTrainConfig.learning_rate
            else ""
        )
        + (f" --init-from {config.init_from}" if config.init_from else "")
    )


INTENDED_USE = (
    "Research and decision support only: outlines where a slice may show intracranial "
    "haemorrhage, names the likely subtypes and estimates areas and volumes for a "
    "qualified reader to check. Not for clinical use; not a diagnosis."
)
LIMITATIONS = (
    "Pixel masks exist for 52 slices from 38 scans (bhsd_seg); the held-out volumes are few, "
    "so Dice and IoU carry wide confidence intervals.",
    "Subtype labels come from CT-ICH slice labels and bhsd_seg masks; subtypes with fewer "
    f"than {FEW_POSITIVES} positive test slices are marked too few to trust.",
    "Chronic (hypodense) collections are labelled in part of bhsd_seg and are segmented poorly.",
    "Areas and volumes are only as good as the outline; the bedside ABC/2 estimate is shown beside the voxel count for comparison.",
    "Expects the same input as the classifier: an axial head CT slice in a brain window.",
)


def _model_card(
    config: SegTrainConfig,
    classifier_card: dict[str, Any],
    preprocess_config: PreprocessConfig,
    data: _SegData,
    fitted: FitResult,
    postprocessing: dict[str, Any],
    metrics: dict[str, Any],
    pointing: dict[str, Any],
) -> dict[str, Any]:
    """The model card without ``total_seconds``: the model, its training, measures and limits."""
    chosen = postprocessing["chosen"]
    size = preprocess_config.image_size
    return {
        "name": config.name,
        "version": config.version,
        "kind": "segmentation",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": (
            "Segmentation of intracranial haemorrhage by subtype on one axial brain CT slice, "
            "and per-slice subtype probabilities."
        ),
        "architecture": "compact U-Net (4 poolings, separable convolutions in the deep stages) with a subtype head on the bottleneck",
        "parameters": int(fitted.model.count_params()),
        "input_shape": [size, size, 1],
        "classes": ["background", *SUBTYPES],
        "subtypes": list(SUBTYPES),
        "subtype_colours": {
            name: "#{:02x}{:02x}{:02x}".format(*colour) for name, colour in SUBTYPE_COLOURS.items()
        },
        "blood_threshold": float(chosen["blood_threshold"]),
        "min_component_px": int(chosen["min_component_px"]),
        "postprocessing": postprocessing,
        "preprocessing": preprocess_config.to_dict(),
        "preprocessing_source": f"{classifier_card['name']} {classifier_card['version']} (identical pixels to the classifier)",
        "augmentation": fitted.augmentation.to_dict(),
        "training": {
            "datasets": [
                "bhsd_seg (masks)",
                "ct_ich (normal slices: empty masks; haemorrhage slices: subtype labels only)",
            ],
            "split_manifest": "split_manifest.json",
            "split": "bhsd_seg by volume (seeded; every subtype in training and test); ct_ich by the classifier's patient split",
            "counts": {
                name: {
                    "slices": len(part.samples),
                    "with_blood": int(sum(s.any_blood for s in part.samples)),
                    "groups": len(set(part.groups)),
                }
                for name, part in data.parts.items()
            },
            "epochs_run": fitted.epochs_run,
            "stopped_by_time_budget": fitted.stopped_by_time_budget,
            "seconds": round(fitted.seconds, 1),
            "hardware": f"{platform.processor() or platform.machine()}, GPUs: {len(tf.config.list_physical_devices('GPU'))}",
            "config": asdict(config),
        },
        "metrics": metrics,
        "pointing_game": pointing,
        "cpu_latency_ms_per_slice": round(measure_latency(fitted.model, size), 2),
        "intended_use": INTENDED_USE,
        "limitations": [*LIMITATIONS, *pointing_game_limitations(pointing["test_volumes"])],
        "reproduce": _reproduce_command(config),
    }


def train_segmentation(
    config: SegTrainConfig, data_dir: Path, output_dir: Path, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Train, choose the post-processing on validation, test once, write the bundle and card.

    Every random draw follows ``config.seed`` in a fixed order (the splits, the initial weights,
    the mixing, shuffling and augmentation), so the same configuration trains the same model.
    """
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    classifier_dir = Path(config.classifier_dir)
    classifier_card = read_card(classifier_dir)
    preprocess_config = PreprocessConfig.from_dict(classifier_card["preprocessing"])

    data = _read_data(config, data_dir, output_dir, classifier_card, preprocess_config, cache_dir)
    model = _compiled_unet(config, preprocess_config.image_size)
    fitted = _fit(config, model, data, output_dir)
    postprocessing, metrics = _measure(config, fitted.model, data)
    all_bhsd = prepare(
        [*data.bhsd["train"], *data.bhsd["validation"], *data.bhsd["test"]], preprocess_config, cache_dir
    )
    pointing = {
        "test_volumes": pointing_game(classifier_dir, data.parts["bhsd_test"]),
        "all_bhsd_seg_slices": pointing_game(classifier_dir, all_bhsd),
    }
    card = _model_card(
        config, classifier_card, preprocess_config, data, fitted, postprocessing, metrics, pointing
    )
    card["total_seconds"] = round(time.monotonic() - started, 1)
    (output_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
    (output_dir / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card
