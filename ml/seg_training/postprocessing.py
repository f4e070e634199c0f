"""Masks predicted in batches, the measures an epoch is scored by, and the post-processing chosen on validation."""

from __future__ import annotations

import logging
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.evaluation.segmentation import overlap_counts
from ml.seg_training.data import Prepared
from ml.segmenter import class_map_from_probabilities

logger = logging.getLogger(__name__)


BLOOD_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


MIN_COMPONENTS_PX = (0, 5, 10, 20, 40, 80)


# Required share of normal validation slices without predicted blood when choosing the
# post-processing (above the 0.90 target, as a margin).
NORMAL_CLEAR_GOAL = 0.93


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
