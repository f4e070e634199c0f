"""Haemorrhage classifiers: a compact CNN for CPU serving, and reference backbones.

Every model takes a ``(size, size, 1)`` float image in [0, 1] and ends in a linear layer named
``logit`` followed by a sigmoid named ``probability``: Grad-CAM differentiates the logit, which
does not saturate the way the probability does.
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["BACKBONES", "GRADCAM_LAYERS", "build_classifier", "compact_encoder"]

# The layer whose activations Grad-CAM weighs, for each backbone.
GRADCAM_LAYERS = {
    "compact": "gradcam_features",
    "tiny": "gradcam_features",
    "resnet50": "conv5_block3_out",
    "densenet121": "relu",
}
BACKBONES = tuple(GRADCAM_LAYERS)
# Batch-norm statistics settle within a few epochs of a small dataset (default 0.99 lags).
BN_MOMENTUM = 0.9


def _conv_block(x: keras.KerasTensor, filters: int, name: str, separable: bool) -> keras.KerasTensor:
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    for index in (1, 2):
        x = conv(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{index}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{index}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{index}")(x)
    return x


def compact_encoder(
    inputs: keras.KerasTensor, width: int
) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """The compact backbone: the ``gradcam_features`` map at 1/16 of the grid, and the feature
    maps at 1/2, 1/4 and 1/8 (before each pooling) that a decoder can join."""
    # Stem: a strided 5x5 convolution halves the grid cheaply (224 -> 112).
    x = layers.Conv2D(width, 5, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    skips = []
    # 112 -> 56 -> 28 -> 14; separable convolutions past the first block keep it light.
    for stage, multiplier in enumerate((1, 2, 4), start=1):
        x = _conv_block(x, width * multiplier, f"block{stage}", separable=stage > 1)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"block{stage}_pool")(x)
    x = _conv_block(x, width * 6, "block4", separable=True)
    # A 14 x 14 map is fine enough for Grad-CAM to point at a bleed.
    return layers.Activation("linear", name="gradcam_features")(x), skips


def build_classifier(
    input_shape: tuple[int, int, int] = (224, 224, 1),
    backbone: str = "compact",
    width: int = 32,
    dropout: float = 0.3,
) -> keras.Model:
    """Build an untrained haemorrhage classifier.

    Args:
        input_shape: ``(height, width, channels)`` of the preprocessed input.
        backbone: ``"compact"`` (served), ``"tiny"`` (tests), ``"resnet50"`` or
            ``"densenet121"`` (reference models from ``keras.applications``, no weights).
        width: base number of filters of the compact backbones.
        dropout: dropout rate before the final layer.

    Returns:
        A model with outputs ``probability`` (sigmoid) and a ``logit`` layer before it.
    """
    if backbone not in GRADCAM_LAYERS:
        raise ValueError(f"Unknown backbone {backbone!r}; choose one of {list(GRADCAM_LAYERS)}.")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    inputs = keras.Input(shape=input_shape, name="image")
    if backbone == "compact":
        features, _ = compact_encoder(inputs, width)
    elif backbone == "tiny":
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="tiny_conv1")(inputs)
        x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="tiny_conv2")(x)
        features = layers.Activation("linear", name="gradcam_features")(x)
    else:
        # Reference backbones expect roughly zero-centred inputs.
        scaled = layers.Rescaling(2.0, offset=-1.0, name="center")(inputs)
        application = {
            "resnet50": keras.applications.ResNet50,
            "densenet121": keras.applications.DenseNet121,
        }[backbone]
        base = application(include_top=False, weights=None, input_tensor=scaled)
        features = base.output
    x = layers.GlobalAveragePooling2D(name="pool")(features)
    x = layers.Dropout(dropout, name="dropout")(x)
    logit = layers.Dense(1, name="logit")(x)
    probability = layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    return keras.Model(inputs, probability, name=f"ich_{backbone}")
