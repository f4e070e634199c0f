"""A compact U-Net that segments haemorrhage by subtype and names the subtypes on a slice.

Input: the classifier's preprocessed ``(size, size, 1)`` image in [0, 1]. Outputs:

* ``mask``: per-pixel softmax over background and the five subtypes (``ml.data.segmentation.SUBTYPES``);
* ``subtypes``: per-slice sigmoid probability of each subtype, from the bottleneck.

The encoder halves the grid four times (224 -> 14); separable convolutions in the deeper
stages and a single convolution at full resolution keep a training step affordable on a CPU.
"""

from __future__ import annotations

import keras
from keras import layers

from ml.models.classifier import BN_MOMENTUM

__all__ = [
    "SEGMENTATION_CLASSES",
    "build_unet",
    "conv_block",
    "conv_unit",
    "decoder",
    "encoder",
    "stage_filters",
]

SEGMENTATION_CLASSES = 6


def conv_unit(x: keras.KerasTensor, filters: int, name: str, separable: bool = False) -> keras.KerasTensor:
    """A 3 x 3 convolution (separable when asked), batch normalisation and ReLU."""
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv_block(x: keras.KerasTensor, filters: int, name: str, separable: bool) -> keras.KerasTensor:
    """Two :func:`conv_unit` in a row."""
    x = conv_unit(x, filters, f"{name}a", separable)
    return conv_unit(x, filters, f"{name}b", separable)


def stage_filters(width: int) -> list[int]:
    """Filters at full resolution, at 1/2, 1/4, 1/8 and in the 1/16 bottleneck."""
    return [max(4, int(width * m)) for m in (1, 1.5, 3, 6, 10)]


def encoder(
    inputs: keras.KerasTensor, filters: list[int], separable_from: int
) -> tuple[keras.KerasTensor, list[keras.KerasTensor]]:
    """The bottleneck (1/16 of the grid) and the skip connections at 1, 1/2, 1/4 and 1/8;
    stages from ``separable_from`` on use separable convolutions."""
    skips = [conv_unit(inputs, filters[0], "enc0")]
    x = skips[0]
    for level in range(1, 4):
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
        x = conv_block(x, filters[level], f"enc{level}", separable=level >= separable_from)
        skips.append(x)
    x = layers.MaxPooling2D(2, name="pool4")(x)
    return conv_block(x, filters[4], "bottleneck", separable=True), skips


def decoder(
    x: keras.KerasTensor, skips: list[keras.KerasTensor], filters: list[int], separable_from: int
) -> keras.KerasTensor:
    """Back up to the full grid, joining each skip connection on the way."""
    for level in range(3, -1, -1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        if level == 0:
            x = conv_unit(x, filters[0], "dec0")
        else:
            x = conv_block(x, filters[level], f"dec{level}", separable=level >= separable_from)
    return x


def build_unet(
    input_shape: tuple[int, int, int] = (224, 224, 1),
    width: int = 16,
    num_subtypes: int = SEGMENTATION_CLASSES - 1,
    dropout: float = 0.3,
) -> keras.Model:
    """Build an untrained segmentation-and-subtype model.

    Args:
        input_shape: ``(height, width, 1)``; height and width divisible by 16.
        width: filters at full resolution; deeper stages use multiples of it.
        num_subtypes: subtype classes (the mask has one more, background).
        dropout: dropout before the subtype head.
    """
    if input_shape[0] % 16 or input_shape[1] % 16:
        raise ValueError(f"Height and width must be divisible by 16, got {input_shape[:2]}.")
    filters = stage_filters(width)
    inputs = keras.Input(shape=input_shape, name="image")
    bottleneck, skips = encoder(inputs, filters, separable_from=3)

    pooled = layers.Concatenate(name="subtype_pool")(
        [
            layers.GlobalAveragePooling2D(name="subtype_avg")(bottleneck),
            layers.GlobalMaxPooling2D(name="subtype_max")(bottleneck),
        ]
    )
    pooled = layers.Dropout(dropout, name="subtype_dropout")(pooled)
    subtype_logits = layers.Dense(num_subtypes, name="subtype_logits")(pooled)
    subtypes = layers.Activation("sigmoid", name="subtypes", dtype="float32")(subtype_logits)

    x = decoder(bottleneck, skips, filters, separable_from=3)
    logits = layers.Conv2D(num_subtypes + 1, 1, name="mask_logits")(x)
    mask = layers.Activation("softmax", name="mask", dtype="float32")(logits)
    return keras.Model(inputs, {"mask": mask, "subtypes": subtypes}, name="ich_unet")
