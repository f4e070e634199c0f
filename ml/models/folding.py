"""Inference copies of trained models with batch normalisation folded into the convolutions.

At inference a batch normalisation is a fixed scale and shift per channel. When it directly
follows a convolution whose output nothing else reads, the scale can be multiplied into the
convolution's kernel and the shift become its bias: the same outputs up to float rounding, one
pass over each activation map fewer. Training keeps the unfolded model; serving folds on load.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = ["fold_batch_norms"]

_FOLDABLE = (keras.layers.Conv2D, keras.layers.SeparableConv2D)


class _Folded(keras.layers.Layer):
    """Stands where a batch normalisation was folded into the convolution before it."""

    def call(self, inputs: Any, mask: Any = None, training: Any = None) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def _foldable_pairs(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Batch-normalisation layer name -> the convolution it can be folded into."""
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        if layer.axis not in (-1, [-1], [3], 3):
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        producer = parents[0].operation
        if (
            isinstance(producer, _FOLDABLE)
            and len(producer._inbound_nodes) == 1
            and len(producer._outbound_nodes) == 1
        ):
            pairs[layer.name] = producer
    return pairs


def _folded_weights(conv: keras.layers.Layer, norm: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """The convolution's weights with the normalisation's scale and shift folded in (with a bias)."""
    variance = np.asarray(norm.moving_variance, np.float64)
    mean = np.asarray(norm.moving_mean, np.float64)
    gamma = np.asarray(norm.gamma, np.float64) if norm.scale else np.ones_like(mean)
    beta = np.asarray(norm.beta, np.float64) if norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    weights = [np.asarray(weight, np.float64) for weight in conv.get_weights()]
    bias = weights.pop() if conv.use_bias else np.zeros_like(mean)
    # The output channels are the last axis of Conv2D's kernel and of SeparableConv2D's pointwise kernel.
    weights[-1] = weights[-1] * scale
    weights.append(beta + (bias - mean) * scale)
    return [weight.astype(np.float32) for weight in weights]


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """A copy of ``model`` for inference, each foldable batch normalisation folded into its
    convolution; layer names, inputs and outputs are kept (a Grad-CAM layer is found by name as
    before). A model without foldable pairs is returned as it is."""
    pairs = _foldable_pairs(model)
    if not pairs:
        return model
    folded_convs = {conv.name: name for name, conv in pairs.items()}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in pairs:
            return _Folded(name=layer.name)
        config = layer.get_config()
        if layer.name in folded_convs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    originals = {layer.name: layer for layer in model.layers}
    for layer in copy.layers:
        original = originals.get(layer.name)
        if layer.name in pairs or (original is None and not layer.weights):
            continue  # folded away, or an input layer the copy named itself
        if original is None:
            raise ValueError(f"The folded copy has a layer {layer.name!r} that the model lacks.")
        if layer.name in folded_convs:
            layer.set_weights(_folded_weights(original, originals[folded_convs[layer.name]]))
        else:
            layer.set_weights(original.get_weights())
    return copy
