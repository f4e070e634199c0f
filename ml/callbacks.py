"""Keras callbacks the trainings share: a wall-clock budget and stochastic weight averaging."""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["TimeBudget", "WeightAverage", "refresh_batch_norm"]

logger = logging.getLogger(__name__)


class WeightAverage(keras.callbacks.Callback):
    """Running mean of the trainable weights at the end of each epoch from ``start_epoch``
    (counting from 1) on; :meth:`apply` puts the mean into the model."""

    def __init__(self, start_epoch: int) -> None:
        super().__init__()
        self.start_epoch = start_epoch
        self.count = 0
        self.sums: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch + 1 < self.start_epoch:
            return
        weights = [np.asarray(variable.numpy(), np.float64) for variable in self.model.trainable_variables]
        self.sums = (
            weights if not self.sums else [total + w for total, w in zip(self.sums, weights, strict=True)]
        )
        self.count += 1

    def apply(self) -> int:
        """Set the averaged weights; returns how many epochs went into the average (0: none,
        the model keeps its last weights)."""
        if not self.count:
            return 0
        for variable, total in zip(self.model.trainable_variables, self.sums, strict=True):
            variable.assign((total / self.count).astype(variable.dtype))
        return self.count


def refresh_batch_norm(model: keras.Model, data: tf.data.Dataset, passes: int = 2) -> None:
    """Measure every batch-normalisation layer's moving statistics again on ``data``.

    Averaged weights need their own statistics: those left by the last epoch belong to other
    weights. The statistics are reset and the data run through in training mode (which updates
    them and nothing else); with momentum 0.9 the reset values fade below 1e-4 within 90 batches.
    """
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    for _ in range(passes):
        for images, *_ in data:
            model(images, training=True)


class TimeBudget(keras.callbacks.Callback):
    """Stop training once the wall-clock budget is spent.

    Checked after every batch, so a slow model cannot overrun the budget by a whole epoch;
    the interrupted epoch still ends with validation and a checkpoint.
    """

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = minutes * 60.0
        self.started = time.monotonic()
        self.stopped_early = False

    def _check(self) -> None:
        if not self.stopped_early and time.monotonic() - self.started > self.seconds:
            logger.info("Time budget of %.1f min spent.", self.seconds / 60)
            self.stopped_early = True
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._check()
