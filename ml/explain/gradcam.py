"""Grad-CAM: where the classifier looked.

One compiled forward-and-gradient pass returns both the probabilities and the heat maps, so
serving an explanation costs little more than the prediction itself.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
import tensorflow as tf

__all__ = ["GradCam", "overlay_heatmap"]


class GradCam:
    """Grad-CAM for a classifier with a ``logit`` layer and a named convolutional layer.

    Args:
        model: a model built by :func:`ml.models.classifier.build_classifier`.
        layer_name: the convolutional layer to explain (the model card's ``gradcam_layer``).
    """

    def __init__(self, model: keras.Model, layer_name: str) -> None:
        try:
            target = model.get_layer(layer_name)
            logit = model.get_layer("logit")
        except ValueError as exc:
            raise ValueError(
                f"Model {model.name!r} has no layer {layer_name!r} or 'logit'; "
                "name the Grad-CAM layer from the model card."
            ) from exc
        self.layer_name = layer_name
        self._model = keras.Model(model.inputs, [target.output, logit.output])
        # A fixed signature (any batch size, the model's input grid) compiles the graph once.
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        self._compute = tf.function(self._forward, input_signature=[spec])

    def _forward(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            features, logits = self._model(images, training=False)
            logits = tf.reshape(logits, [-1])
        # d(logit)/d(features) for every image at once: images are independent in the batch.
        gradients = tape.gradient(logits, features)
        return features, gradients, logits

    def __call__(
        self,
        images: np.ndarray | tf.Tensor,
        threshold: float = 0.5,
        positive: bool | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and heat maps for a batch of preprocessed images.

        Args:
            images: ``N x H x W x 1`` float32 in [0, 1].
            threshold: decision threshold; each image's predicted class is explained.
            positive: instead, explain the haemorrhage class (``True``) or the normal class
                (``False``), per image or for all.

        Returns:
            ``probabilities`` (N,) and ``heatmaps`` (N x h x w) in [0, 1] on the layer's grid.
        """
        batch = tf.convert_to_tensor(images, tf.float32)
        features, gradients, logits = self._compute(batch)
        probabilities = tf.sigmoid(logits).numpy()
        if positive is None:
            sign = np.where(probabilities >= threshold, 1.0, -1.0)
        else:
            sign = np.where(np.broadcast_to(np.asarray(positive), probabilities.shape), 1.0, -1.0)
        # The normal class's score is -logit, so its gradients are the negated ones.
        signed_gradients = gradients.numpy() * sign[:, None, None, None]
        weights = signed_gradients.mean(axis=(1, 2))
        cams = np.einsum("nhwc,nc->nhw", features.numpy(), weights)
        cams = np.maximum(cams, 0.0)
        peaks = cams.max(axis=(1, 2), keepdims=True)
        heatmaps = np.where(peaks > 0, cams / np.maximum(peaks, 1e-12), 0.0).astype(np.float32)
        return probabilities.astype(np.float32), heatmaps


def overlay_heatmap(
    grayscale: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4, outline_level: float = 0.6
) -> np.ndarray:
    """Colour the heat map over a greyscale image and outline its most activated region.

    Args:
        grayscale: 2-D image, uint8 or float in [0, 1].
        heatmap: 2-D map in [0, 1], resized to the image when its shape differs.
        opacity: weight of the colour map.
        outline_level: heat level whose contour is drawn (white).

    Returns:
        An RGB uint8 image.
    """
    if grayscale.ndim != 2:
        raise ValueError(f"Expected a 2-D greyscale image, got shape {grayscale.shape}.")
    base = (
        grayscale
        if grayscale.dtype == np.uint8
        else np.round(np.clip(grayscale, 0, 1) * 255).astype(np.uint8)
    )
    height, width = base.shape
    if heatmap.shape != base.shape:
        heatmap = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.round(np.clip(heatmap, 0.0, 1.0) * 255.0).astype(np.uint8)
    coloured = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    grey_rgb = cv2.cvtColor(base, cv2.COLOR_GRAY2RGB)
    # Weight colour by heat so that cold regions keep the original grey.
    alpha = (opacity * np.clip(heatmap, 0.0, 1.0))[:, :, None]
    blended = (grey_rgb * (1.0 - alpha) + coloured * alpha).astype(np.uint8)
    hot = (heatmap >= outline_level).astype(np.uint8)
    contours, _ = cv2.findContours(hot, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(height, width) / 250))
    cv2.drawContours(blended, contours, -1, (255, 255, 255), thickness)
    return blended
