"""Pixel loss terms shared by the segmentation model and the multitask network.

``target`` is one-hot over the six classes (background first), ``y_pred`` the softmax, ``valid``
1 where a pixel's class may be learnt from; all ``B x H x W`` (x classes).
"""

from __future__ import annotations

import tensorflow as tf

SMOOTH = 1.0


def masked_cross_entropy(target: tf.Tensor, y_pred: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """Cross-entropy averaged over the valid pixels."""
    probabilities = tf.clip_by_value(y_pred, 1e-6, 1.0)
    cross_entropy = -tf.reduce_sum(target * tf.math.log(probabilities), axis=-1)
    return tf.reduce_sum(cross_entropy * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def blood_dice(target: tf.Tensor, y_pred: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Soft Dice of any blood (every class but background) over the valid pixels, and the true
    blood map it was measured against."""
    true_blood = tf.reduce_sum(target[..., 1:], axis=-1) * valid
    predicted_blood = tf.reduce_sum(y_pred[..., 1:], axis=-1) * valid
    dice = (2.0 * tf.reduce_sum(true_blood * predicted_blood) + SMOOTH) / (
        tf.reduce_sum(true_blood) + tf.reduce_sum(predicted_blood) + SMOOTH
    )
    return dice, true_blood
