"""Classifier builders: outputs, named layers, argument checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ml.models.classifier import BACKBONES, GRADCAM_LAYERS, build_classifier


def check_named_layers(model: keras.Model, backbone: str) -> None:
    logit = model.get_layer("logit")
    probability = model.get_layer("probability")
    gradcam = model.get_layer(GRADCAM_LAYERS[backbone])
    assert logit.output.shape == (None, 1)
    assert probability.output.shape == (None, 1)
    assert model.outputs[0] is probability.output
    # Grad-CAM needs a spatial map, not a pooled vector.
    assert len(gradcam.output.shape) == 4


@pytest.mark.parametrize(
    ("backbone", "grid"),
    [("tiny", 16), ("compact", 4)],
)
def test_compact_backbones_output_and_layers(backbone: str, grid: int) -> None:
    model = build_classifier(input_shape=(64, 64, 1), backbone=backbone)
    images = np.random.default_rng(0).uniform(0, 1, (3, 64, 64, 1)).astype(np.float32)

    probabilities = model.predict(images, verbose=0)

    assert model.name == f"ich_{backbone}"
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 1)
    assert probabilities.shape == (3, 1)
    assert ((probabilities > 0.0) & (probabilities < 1.0)).all()
    check_named_layers(model, backbone)
    assert model.get_layer(GRADCAM_LAYERS[backbone]).output.shape[1:3] == (grid, grid)


def test_tiny_fixture_has_the_named_layers(tiny_model: keras.Model) -> None:
    check_named_layers(tiny_model, "tiny")


def test_probability_is_the_sigmoid_of_the_logit(tiny_model: keras.Model) -> None:
    images = np.random.default_rng(1).uniform(0, 1, (4, 64, 64, 1)).astype(np.float32)
    logit_model = keras.Model(tiny_model.inputs, tiny_model.get_layer("logit").output)

    logits = logit_model.predict(images, verbose=0)
    probabilities = tiny_model.predict(images, verbose=0)

    np.testing.assert_allclose(probabilities, 1.0 / (1.0 + np.exp(-logits)), atol=1e-6)


def test_width_sets_the_number_of_filters() -> None:
    narrow = build_classifier(input_shape=(64, 64, 1), backbone="compact", width=8)
    wide = build_classifier(input_shape=(64, 64, 1), backbone="compact", width=16)

    assert narrow.get_layer("gradcam_features").output.shape[-1] == 8 * 6
    assert wide.get_layer("gradcam_features").output.shape[-1] == 16 * 6
    assert wide.count_params() > 2 * narrow.count_params()


def test_dropout_rate_is_applied() -> None:
    model = build_classifier(input_shape=(64, 64, 1), backbone="tiny", dropout=0.5)

    assert model.get_layer("dropout").rate == 0.5


def test_resnet50_builds_at_small_input() -> None:
    model = build_classifier(input_shape=(64, 64, 1), backbone="resnet50")

    probabilities = model.predict(np.zeros((1, 64, 64, 1), dtype=np.float32), verbose=0)

    assert probabilities.shape == (1, 1)
    check_named_layers(model, "resnet50")


def test_backbones_and_gradcam_layers_agree() -> None:
    assert set(BACKBONES) == set(GRADCAM_LAYERS) == {"compact", "tiny", "resnet50", "densenet121"}


def test_unknown_backbone_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"Unknown backbone 'vgg16'.*compact"):
        build_classifier(backbone="vgg16")


def test_input_shape_must_have_three_dimensions() -> None:
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, channels\)"):
        build_classifier(input_shape=(64, 64), backbone="tiny")  # type: ignore[arg-type]
