"""One network for every label: slice probability, subtypes and a per-pixel subtype mask.

A U-Net encoder is shared by three heads:

* ``probability``: sigmoid of a linear ``logit`` over the pooled bottleneck (Grad-CAM explains
  this head on ``gradcam_features``, the bottleneck at 1/16 of the input grid);
* ``subtypes``: per-slice sigmoid probability of each of the five subtypes;
* ``mask``: per-pixel softmax over background and the five subtypes, from the decoder.

One forward pass answers all three, so serving the outlines costs no second model. The input is
the preprocessed ``(size, size, 1)`` image in [0, 1] (``ml.data.preprocessing``).
"""

from __future__ import annotations

import keras
from keras import layers

from ml.models.unet import SEGMENTATION_CLASSES, decoder, encoder, stage_filters

__all__ = ["GRADCAM_LAYER", "build_multitask"]

GRADCAM_LAYER = "gradcam_features"


def build_multitask(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    width: int = 16,
    num_subtypes: int = SEGMENTATION_CLASSES - 1,
    dropout: float = 0.3,
) -> keras.Model:
    """Build the untrained three-headed network.

    Args:
        input_shape: ``(height, width, 1)``; height and width divisible by 16.
        width: filters at full resolution; deeper stages use multiples of it.
        num_subtypes: subtype classes (the mask has one more, background).
        dropout: dropout before the slice and subtype heads.

    Returns:
        A model with outputs ``{"probability": (N, 1), "subtypes": (N, 5), "mask": (N, H, W, 6)}``
        and the layers ``logit`` and ``gradcam_features`` that Grad-CAM uses.
    """
    if len(input_shape) != 3 or input_shape[0] % 16 or input_shape[1] % 16:
        raise ValueError(f"input_shape must be (height, width, channels) divisible by 16, got {input_shape}.")
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
