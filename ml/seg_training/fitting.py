"""Fitting the segmentation model: its mask loss, the compiled U-Net, the fit on the mixed sources."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from ml.callbacks import TimeBudget
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.losses import SMOOTH, blood_dice, masked_cross_entropy
from ml.models.unet import SEGMENTATION_CLASSES, build_unet
from ml.seg_training.config import SegTrainConfig
from ml.seg_training.data import SegData, training_data
from ml.seg_training.postprocessing import ValidationScore
from ml.training import FitResult

logger = logging.getLogger(__name__)


def mask_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Cross-entropy plus soft Dice on the pixels of slices whose mask is known.

    ``y_true`` is ``B x H x W x 7``: one-hot over the six classes, then a channel that is 1
    where the slice's mask may be learnt from (0 for haemorrhage slices without a mask).
    """
    target = y_true[..., :SEGMENTATION_CLASSES]
    valid = y_true[..., SEGMENTATION_CLASSES]
    cross_entropy = masked_cross_entropy(target, y_pred, valid)
    dice_of_blood, _ = blood_dice(target, y_pred, valid)
    weights = valid[..., tf.newaxis]
    class_true = tf.reduce_sum(target[..., 1:] * weights, axis=[0, 1, 2])
    class_pred = tf.reduce_sum(y_pred[..., 1:] * weights, axis=[0, 1, 2])
    class_overlap = tf.reduce_sum(target[..., 1:] * y_pred[..., 1:] * weights, axis=[0, 1, 2])
    class_dice = (2.0 * class_overlap + SMOOTH) / (class_true + class_pred + SMOOTH)
    present = tf.cast(class_true > 0, tf.float32)
    mean_class_dice = tf.reduce_sum(class_dice * present) / tf.maximum(tf.reduce_sum(present), 1.0)
    has_classes = tf.cast(tf.reduce_sum(present) > 0, tf.float32)
    return cross_entropy + (1.0 - dice_of_blood) + 0.5 * has_classes * (1.0 - mean_class_dice)


def compiled_unet(config: SegTrainConfig, size: int) -> keras.Model:
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


def fit(config: SegTrainConfig, model: keras.Model, data: SegData, output_dir: Path) -> FitResult:
    """Fit on the mixed, augmented sources; keep the checkpoint with the best validation score."""
    augmentation = AugmentationConfig(rotation_degrees=25.0, zoom_fraction=0.2, resample_probability=0.25)
    train_data = training_data(
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
    return FitResult.kept(checkpoint_path, history, augmentation, budget, fit_started)
