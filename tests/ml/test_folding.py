"""Batch normalisation folded into the convolutions: same outputs, fewer layers that compute."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ml.explain.gradcam import GradCam
from ml.models.classifier import GRADCAM_LAYERS, build_classifier
from ml.models.folding import fold_batch_norms
from ml.models.multitask import GRADCAM_LAYER, build_multitask
from ml.models.unet import build_unet


def _trained_statistics(model: keras.Model, seed: int) -> None:
    """Give every batch normalisation non-trivial statistics, as training would."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, channels),
                    rng.normal(0.0, 0.3, channels),
                    rng.normal(0.0, 0.5, channels),
                    rng.uniform(0.2, 2.0, channels),
                ]
            )


def _normalisations(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_the_classifier_folded_gives_the_same_probabilities_and_grad_cam() -> None:
    keras.utils.set_random_seed(1)
    model = build_classifier((64, 64, 1), width=8)
    _trained_statistics(model, 1)
    before = [weight.copy() for weight in model.get_weights()]
    images = np.random.default_rng(2).random((4, 64, 64, 1)).astype(np.float32)

    folded = fold_batch_norms(model)

    assert _normalisations(model) > 0 and _normalisations(folded) == 0
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(folded(images, training=False), model(images, training=False), atol=1e-5)
    layer = GRADCAM_LAYERS["compact"]
    original_probs, original_maps = GradCam(model, layer)(images, 0.5)
    folded_probs, folded_maps = GradCam(folded, layer)(images, 0.5)
    np.testing.assert_allclose(folded_probs, original_probs, atol=1e-5)
    np.testing.assert_allclose(folded_maps, original_maps, atol=1e-4)
    for kept, weight in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, weight)  # the trained model is left as it was


def test_the_unet_folded_gives_the_same_masks_and_subtypes() -> None:
    keras.utils.set_random_seed(3)
    model = build_unet((64, 64, 1), width=4)
    _trained_statistics(model, 3)
    images = np.random.default_rng(4).random((3, 64, 64, 1)).astype(np.float32)

    folded = fold_batch_norms(model)

    assert _normalisations(folded) == 0
    expected, actual = model(images, training=False), folded(images, training=False)
    for name in ("mask", "subtypes"):
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5)


def test_the_multitask_network_folded_gives_the_same_heads_and_grad_cam() -> None:
    keras.utils.set_random_seed(8)
    model = build_multitask((64, 64, 1), width=4)
    _trained_statistics(model, 8)
    images = np.random.default_rng(9).random((3, 64, 64, 1)).astype(np.float32)

    folded = fold_batch_norms(model)

    assert _normalisations(model) > 0 and _normalisations(folded) == 0
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    expected, actual = model(images, training=False), folded(images, training=False)
    assert set(actual) == {"probability", "subtypes", "mask"}
    for name in ("probability", "subtypes", "mask"):
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5)
    heads = ("subtypes", "mask")
    original = GradCam(model, GRADCAM_LAYER, extra_outputs=heads).explain(images, 0.5)
    served = GradCam(folded, GRADCAM_LAYER, extra_outputs=heads).explain(images, 0.5)
    np.testing.assert_allclose(served.probabilities, original.probabilities, atol=1e-5)
    np.testing.assert_allclose(served.heatmaps, original.heatmaps, atol=1e-4)
    for name in heads:
        np.testing.assert_allclose(served.outputs[name], original.outputs[name], atol=1e-5)


def test_a_convolution_read_elsewhere_is_not_folded() -> None:
    inputs = keras.Input((16, 16, 2))
    features = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="shared")(inputs)
    normalised = keras.layers.BatchNormalization(name="norm")(features)
    outputs = keras.layers.Add()([normalised, features])  # the raw convolution is read twice
    model = keras.Model(inputs, outputs)
    _trained_statistics(model, 5)

    folded = fold_batch_norms(model)

    assert folded is model


@pytest.mark.parametrize("separable", [False, True])
def test_a_convolution_with_its_own_bias_keeps_it(separable: bool) -> None:
    conv = keras.layers.SeparableConv2D if separable else keras.layers.Conv2D
    inputs = keras.Input((12, 12, 2))
    x = conv(4, 3, padding="same", use_bias=True, name="conv")(inputs)
    outputs = keras.layers.BatchNormalization(name="norm")(x)
    model = keras.Model(inputs, outputs)
    _trained_statistics(model, 6)
    model.get_layer("conv").set_weights(
        [*model.get_layer("conv").get_weights()[:-1], np.array([0.5, -0.5, 1.0, 0.0], np.float32)]
    )
    images = np.random.default_rng(7).random((2, 12, 12, 2)).astype(np.float32)

    folded = fold_batch_norms(model)

    assert _normalisations(folded) == 0
    np.testing.assert_allclose(folded(images, training=False), model(images, training=False), atol=1e-5)
