"""Fitting the classifier: the compiled model, the callbacks in their order, the fit itself."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ml.callbacks import TimeBudget, WeightAverage, refresh_batch_norm
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.splits import Split
from ml.evaluation.metrics import mean_source_auc
from ml.model_io import predict_probabilities
from ml.models.classifier import build_classifier
from ml.training.config import TrainConfig
from ml.training.data import balanced_sample_weights, labels_balanced_per_source, tf_dataset

logger = logging.getLogger(__name__)


def compiled_classifier(config: TrainConfig) -> keras.Model:
    """A new classifier (or the weights of ``init_from``), compiled with its optimiser and loss."""
    model = build_classifier(
        (config.image_size, config.image_size, 1), config.backbone, config.width, config.dropout
    )
    if config.init_from:
        # Continue from an earlier run of the same architecture (weights only; a fresh
        # optimiser, split and threshold).
        model.set_weights(keras.saving.load_model(config.init_from, compile=False).get_weights())
        logger.info("Initialised from %s", config.init_from)
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


@dataclass
class FitResult:
    """The model a fit kept (best checkpoint or weight average, reloaded) and how the fit went.

    ``averaged_epochs`` is how many epochs a weight average took in, ``None`` without one.
    """

    model: keras.Model
    augmentation: AugmentationConfig
    epochs_run: int
    stopped_by_time_budget: bool
    seconds: float
    averaged_epochs: int | None = None

    @classmethod
    def kept(
        cls,
        checkpoint_path: Path,
        history: keras.callbacks.History,
        augmentation: AugmentationConfig,
        budget: TimeBudget,
        fit_started: float,
        averaged_epochs: int | None = None,
    ) -> FitResult:
        """The model saved at ``checkpoint_path``, reloaded, and how the fit begun at ``fit_started``
        (``time.monotonic()``) went."""
        seconds = time.monotonic() - fit_started
        return cls(
            model=keras.saving.load_model(checkpoint_path, compile=False),
            augmentation=augmentation,
            epochs_run=len(history.history.get("loss", [])),
            stopped_by_time_budget=budget.stopped_early,
            seconds=seconds,
            averaged_epochs=averaged_epochs,
        )


class SourceAuc(keras.callbacks.Callback):
    """Adds ``val_source_auc`` to each epoch's logs (see :func:`mean_source_auc`), for the
    checkpoint and early stopping that come after it in the callback list."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> None:
        super().__init__()
        self.images, self.labels, self.sources = images, labels, list(sources)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = mean_source_auc(self.labels, predict_probabilities(self.model, self.images), self.sources)
        if logs is not None:
            logs["val_source_auc"] = value
        logger.info("epoch %d: mean validation AUC over datasets %.4f", epoch + 1, value)


def fit_callbacks(
    config: TrainConfig,
    split: Split,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    output_dir: Path,
) -> tuple[list[keras.callbacks.Callback], WeightAverage | None, TimeBudget]:
    """The fit's callbacks in their order, the weight average (when one is taken) and the budget.

    The monitored value must be in the logs before the checkpoint and early stopping read it,
    so :class:`SourceAuc` comes first.
    """
    budget = TimeBudget(config.time_budget_minutes)
    monitor = f"val_{config.monitor}"
    callbacks: list[keras.callbacks.Callback] = []
    if config.monitor == "source_auc":
        sources = [sample.dataset for sample in split.validation]
        callbacks.append(SourceAuc(arrays["validation"], labels["validation"], sources))
    average = None
    if config.average_from_epoch is None:
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                output_dir / "model.keras", monitor=monitor, mode="max", save_best_only=True
            ),
            keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=4, min_lr=1e-5),
        ]
    else:
        average = WeightAverage(config.average_from_epoch)
        callbacks.append(average)
    callbacks += [keras.callbacks.CSVLogger(str(output_dir / "training_log.csv")), budget]
    return callbacks, average, budget


def fit(
    config: TrainConfig,
    model: keras.Model,
    split: Split,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    output_dir: Path,
) -> FitResult:
    """Fit on the weighted, augmented training split; save and reload the model that is kept."""
    augmentation = AugmentationConfig(
        resample_min_scale=config.resample_min_scale, blur_max_sigma=config.blur_max_sigma
    )
    if config.balance_labels_per_source:
        train_weights = labels_balanced_per_source(split.train)
    else:
        train_weights = balanced_sample_weights(split.train, by_dataset=config.balance_sources)
    train_data = tf_dataset(
        arrays["train"],
        labels["train"],
        config.batch_size,
        Augmenter(augmentation, config.seed),
        config.seed,
        train_weights,
    )
    validation_data = tf_dataset(arrays["validation"], labels["validation"], config.batch_size, None, None)
    checkpoint_path = output_dir / "model.keras"
    callbacks, average, budget = fit_callbacks(config, split, arrays, labels, output_dir)
    fit_started = time.monotonic()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        callbacks=callbacks,
        # A progress bar on a terminal; one line per epoch in logs.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    averaged_epochs = None
    if average is not None:
        averaged_epochs = average.apply()
        if averaged_epochs:
            refresh_batch_norm(model, train_data)
        else:
            logger.warning("No epoch reached epoch %d: keeping the last weights.", config.average_from_epoch)
        model.save(checkpoint_path)
    return FitResult.kept(checkpoint_path, history, augmentation, budget, fit_started, averaged_epochs)
