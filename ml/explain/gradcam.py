"""Grad-CAM: where the classifier looked.

One compiled forward-and-gradient pass returns both the probabilities and the heat maps, so
serving an explanation costs little more than the prediction itself. A model with more heads
(``ml.models.multitask``) can hand back their outputs from the same pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import keras
import numpy as np
import tensorflow as tf

__all__ = ["WEIGHTINGS", "GradCam", "GradCamOutput", "overlay_heatmap"]

WEIGHTINGS = ("channel_mean", "elementwise")


@dataclass
class GradCamOutput:
    """One batch's explanation: ``probabilities`` (N,), ``heatmaps`` (N x h x w) in [0, 1] on the
    layer's grid, and ``outputs``, the model's extra outputs by name (each with the batch first)."""

    probabilities: np.ndarray
    heatmaps: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class GradCam:
    """Grad-CAM for a classifier with a ``logit`` layer and a named convolutional layer.

    Args:
        model: a model built by :func:`ml.models.classifier.build_classifier` or
            :func:`ml.models.multitask.build_multitask`.
        layer_name: the convolutional layer to explain (the model card's ``gradcam_layer``).
        extra_outputs: names of other outputs of the model (keys of its output dict, or layer
            names) to compute in the same pass, for :meth:`explain`; e.g. ``("subtypes", "mask")``.
        weighting: ``"channel_mean"`` (Grad-CAM: each feature map weighed by its mean gradient)
            or ``"elementwise"`` (HiResCAM: each activation times its own gradient, which keeps
            where inside a map the gradient is, not only how much the map matters).
    """

    def __init__(
        self,
        model: keras.Model,
        layer_name: str,
        extra_outputs: Sequence[str] = (),
        weighting: str = "channel_mean",
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown heat-map weighting {weighting!r}; choose one of {WEIGHTINGS}.")
        self.weighting = weighting
        try:
            target = model.get_layer(layer_name)
            logit = model.get_layer("logit")
        except ValueError as exc:
            raise ValueError(
                f"Model {model.name!r} has no layer {layer_name!r} or 'logit'; "
                "name the Grad-CAM layer from the model card."
            ) from exc
        self.layer_name = layer_name
        self.extra_outputs = tuple(extra_outputs)
        extras = [_named_output(model, name) for name in self.extra_outputs]
        self._model = keras.Model(model.inputs, [target.output, logit.output, *extras])
        # A fixed signature (any batch size, the model's input grid) compiles the graph once.
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        self._compute = tf.function(self._forward, input_signature=[spec])

    def _forward(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tuple[tf.Tensor, ...]]:
        with tf.GradientTape() as tape:
            features, logits, *extras = self._model(images, training=False)
            logits = tf.reshape(logits, [-1])
        # d(logit)/d(features) for every image at once: images are independent in the batch.
        # The extra heads do not lie between the features and the logit, so they add no gradient work.
        gradients = tape.gradient(logits, features)
        return features, gradients, logits, tuple(extras)

    def __call__(
        self,
        images: np.ndarray | tf.Tensor,
        threshold: float = 0.5,
        positive: bool | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and heat maps for a batch of preprocessed images (:meth:`explain`
        without the extra outputs)."""
        result = self.explain(images, threshold, positive)
        return result.probabilities, result.heatmaps

    def explain(
        self,
        images: np.ndarray | tf.Tensor,
        threshold: float = 0.5,
        positive: bool | np.ndarray | None = None,
    ) -> GradCamOutput:
        """Probabilities, heat maps and the extra outputs for a batch of preprocessed images.

        Args:
            images: ``N x H x W x 1`` float32 in [0, 1].
            threshold: decision threshold; each image's predicted class is explained.
            positive: instead, explain the haemorrhage class (``True``) or the normal class
                (``False``), per image or for all.

        Returns:
            ``probabilities`` (N,) and ``heatmaps`` (N x h x w) in [0, 1] on the layer's grid,
            and the outputs named in ``extra_outputs``.
        """
        batch = tf.convert_to_tensor(images, tf.float32)
        features, gradients, logits, extras = self._compute(batch)
        probabilities = tf.sigmoid(logits).numpy()
        if positive is None:
            sign = np.where(probabilities >= threshold, 1.0, -1.0)
        else:
            sign = np.where(np.broadcast_to(np.asarray(positive), probabilities.shape), 1.0, -1.0)
        # The normal class's score is -logit, so its gradients are the negated ones.
        signed_gradients = gradients.numpy() * sign[:, None, None, None]
        if self.weighting == "elementwise":
            cams = np.einsum("nhwc,nhwc->nhw", features.numpy(), signed_gradients)
        else:
            weights = signed_gradients.mean(axis=(1, 2))
            cams = np.einsum("nhwc,nc->nhw", features.numpy(), weights)
        cams = np.maximum(cams, 0.0)
        peaks = cams.max(axis=(1, 2), keepdims=True)
        heatmaps = np.where(peaks > 0, cams / np.maximum(peaks, 1e-12), 0.0).astype(np.float32)
        return GradCamOutput(
            probabilities=probabilities.astype(np.float32),
            heatmaps=heatmaps,
            outputs={name: value.numpy() for name, value in zip(self.extra_outputs, extras, strict=True)},
        )


def _named_output(model: keras.Model, name: str) -> keras.KerasTensor:
    """The model's output called ``name`` (a key of its output dict), else the output of its layer
    of that name."""
    outputs = model.output
    if isinstance(outputs, dict) and name in outputs:
        return outputs[name]
    try:
        return model.get_layer(name).output
    except ValueError as exc:
        known = sorted(outputs) if isinstance(outputs, dict) else []
        raise ValueError(
            f"Model {model.name!r} has no output or layer {name!r} (its named outputs: {known}); "
            "ask only for outputs the model has."
        ) from exc


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
