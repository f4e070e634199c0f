"""One network for every label: slice probability, subtypes and a per-pixel subtype mask.

An encoder is shared by three heads:

* ``probability``: sigmoid of a linear ``logit`` over the pooled bottleneck (Grad-CAM explains
  this head on ``gradcam_features``, the bottleneck at 1/16 of the input grid);
* ``subtypes``: per-slice sigmoid probability of each of the five subtypes;
* ``mask``: per-pixel softmax over background and the five subtypes, from the decoder.

One forward pass answers all three, so serving the outlines costs no second model. The input is
the preprocessed ``(size, size, 1)`` image in [0, 1] (``ml.data.preprocessing``).

Two encoders are available. ``"unet"`` is the U-Net's (a convolution at full resolution, 1/16
bottleneck). ``"compact"`` is the served classifier's backbone (``ml.models.classifier``: a
strided stem, so nothing runs at full resolution but the last decoder step), with the
classifier's layer names and its ``pool -> dropout -> logit`` head, so that a trained
classifier's weights carry over (:func:`transfer_weights`) and the slice head starts where the
classifier stands.
"""

from __future__ import annotations

import keras
from keras import layers

from ml.models.classifier import compact_encoder
from ml.models.unet import SEGMENTATION_CLASSES, conv_block, conv_unit, decoder, encoder, stage_filters

__all__ = ["BACKBONES", "GRADCAM_LAYER", "build_multitask", "transfer_weights"]

GRADCAM_LAYER = "gradcam_features"
BACKBONES = ("unet", "compact")


def build_multitask(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    width: int = 16,
    num_subtypes: int = SEGMENTATION_CLASSES - 1,
    dropout: float = 0.3,
    backbone: str = "unet",
) -> keras.Model:
    """Build the untrained three-headed network.

    Args:
        input_shape: ``(height, width, 1)``; height and width divisible by 16.
        width: filters at full resolution; deeper stages use multiples of it.
        num_subtypes: subtype classes (the mask has one more, background).
        dropout: dropout before the slice and subtype heads.
        backbone: ``"unet"`` or ``"compact"`` (see the module's description).

    Returns:
        A model with outputs ``{"probability": (N, 1), "subtypes": (N, 5), "mask": (N, H, W, 6)}``
        and the layers ``logit`` and ``gradcam_features`` that Grad-CAM uses.
    """
    if len(input_shape) != 3 or input_shape[0] % 16 or input_shape[1] % 16:
        raise ValueError(f"input_shape must be (height, width, channels) divisible by 16, got {input_shape}.")
    if backbone == "compact":
        return _build_compact(input_shape, width, num_subtypes, dropout)
    if backbone != "unet":
        raise ValueError(f"Unknown backbone {backbone!r}; choose one of {list(BACKBONES)}.")
    filters = stage_filters(width)
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = encoder(inputs, filters, separable_from=2)
    bottleneck = layers.Activation("linear", name=GRADCAM_LAYER)(x)

    # Average and maximum: a small bleed lights few cells of the map, which an average dilutes.
    pooled = layers.Concatenate(name="pool")(
        [
            layers.GlobalAveragePooling2D(name="pool_avg")(bottleneck),
            layers.GlobalMaxPooling2D(name="pool_max")(bottleneck),
        ]
    )
    pooled = layers.Dropout(dropout, name="dropout")(pooled)
    logit = layers.Dense(1, name="logit")(pooled)
    probability = layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    subtype_logits = layers.Dense(num_subtypes, name="subtype_logits")(pooled)
    subtypes = layers.Activation("sigmoid", name="subtypes", dtype="float32")(subtype_logits)

    x = decoder(bottleneck, skips, filters, separable_from=2)
    mask_logits = layers.Conv2D(num_subtypes + 1, 1, name="mask_logits")(x)
    mask = layers.Activation("softmax", name="mask", dtype="float32")(mask_logits)
    return keras.Model(
        inputs, {"probability": probability, "subtypes": subtypes, "mask": mask}, name="ich_multitask"
    )


def _subtype_head(features: keras.KerasTensor, num_subtypes: int, dropout: float) -> keras.KerasTensor:
    pooled = layers.Concatenate(name="subtype_pool")(
        [
            layers.GlobalAveragePooling2D(name="subtype_avg")(features),
            layers.GlobalMaxPooling2D(name="subtype_max")(features),
        ]
    )
    pooled = layers.Dropout(dropout, name="subtype_dropout")(pooled)
    logits = layers.Dense(num_subtypes, name="subtype_logits")(pooled)
    return layers.Activation("sigmoid", name="subtypes", dtype="float32")(logits)


def _build_compact(
    input_shape: tuple[int, int, int], width: int, num_subtypes: int, dropout: float
) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    features, skips = compact_encoder(inputs, width)
    # The classifier's head, layer for layer.
    pooled = layers.GlobalAveragePooling2D(name="pool")(features)
    pooled = layers.Dropout(dropout, name="dropout")(pooled)
    logit = layers.Dense(1, name="logit")(pooled)
    probability = layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    subtypes = _subtype_head(features, num_subtypes, dropout)

    # Decoder: 1/16 -> 1/8 -> 1/4 -> 1/2 joining the encoder's maps, then the full grid joined
    # with the input itself, where a thin bleed's edge is sharpest.
    x = features
    for level, filters in ((3, 2 * width), (2, width)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level - 1]])
        x = conv_block(x, filters, f"dec{level}", separable=True)
    x = layers.UpSampling2D(2, interpolation="bilinear", name="up1")(x)
    x = layers.Concatenate(name="skip1")([x, skips[0]])
    x = conv_unit(x, width, "dec1")
    x = layers.UpSampling2D(2, interpolation="bilinear", name="up0")(x)
    x = layers.Concatenate(name="skip0")([x, inputs])
    x = conv_unit(x, max(8, width // 2), "dec0")
    mask_logits = layers.Conv2D(num_subtypes + 1, 1, name="mask_logits")(x)
    mask = layers.Activation("softmax", name="mask", dtype="float32")(mask_logits)
    return keras.Model(
        inputs, {"probability": probability, "subtypes": subtypes, "mask": mask}, name="ich_multitask"
    )


def transfer_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy the weights of every layer of ``source`` whose name and weight shapes ``target``
    shares (a trained classifier into a ``"compact"`` multitask network); returns the names
    copied."""
    copied = []
    for layer in target.layers:
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        weights = other.get_weights()
        if not weights or [w.shape for w in weights] != [w.shape for w in layer.get_weights()]:
            continue
        layer.set_weights(weights)
        copied.append(layer.name)
    return copied
