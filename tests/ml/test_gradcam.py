"""Grad-CAM: probabilities, heat maps, overlays, and whether a trained model points at the lesion."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ml.data.preprocessing import Geometry
from ml.explain.gradcam import GradCam, overlay_heatmap
from ml.models.classifier import GRADCAM_LAYERS, build_classifier
from ml.models.multitask import GRADCAM_LAYER, build_multitask

SIZE = 64


def synthetic_slices(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark discs ("heads") with texture; every other one carries a small bright blob ("bleed").

    Returns:
        Images ``(count, 64, 64, 1)`` in [0, 1], labels ``(count,)`` and blob centres
        ``(count, 2)`` as ``(row, column)`` (NaN where there is no blob).
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    images = np.zeros((count, SIZE, SIZE, 1), dtype=np.float32)
    labels = np.zeros(count, dtype=np.float32)
    centres = np.full((count, 2), np.nan)
    for index in range(count):
        centre_row, centre_col = SIZE / 2 + rng.uniform(-3, 3, size=2)
        radius = rng.uniform(24, 28)
        head = (rows - centre_row) ** 2 + (cols - centre_col) ** 2 < radius**2
        image = np.where(head, 0.3 + rng.normal(0.0, 0.03, (SIZE, SIZE)), 0.0)
        if index % 2 == 0:
            angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0, radius - 8)
            blob_row = centre_row + distance * np.sin(angle)
            blob_col = centre_col + distance * np.cos(angle)
            blob = (rows - blob_row) ** 2 + (cols - blob_col) ** 2 < rng.uniform(2.5, 4.0) ** 2
            image = np.where(blob, 0.9, image)
            labels[index] = 1.0
            centres[index] = (blob_row, blob_col)
        images[index, :, :, 0] = np.clip(image, 0.0, 1.0)
    return images, labels, centres


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    images, _, _ = synthetic_slices(6, seed=3)
    return images


def test_probabilities_match_predict(tiny_model: keras.Model, batch: np.ndarray) -> None:
    gradcam = GradCam(tiny_model, GRADCAM_LAYERS["tiny"])

    probabilities, _ = gradcam(batch)

    assert probabilities.shape == (len(batch),)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, tiny_model.predict(batch, verbose=0)[:, 0], atol=1e-5)


def test_heatmaps_lie_in_unit_range_on_the_layer_grid(tiny_model: keras.Model, batch: np.ndarray) -> None:
    gradcam = GradCam(tiny_model, GRADCAM_LAYERS["tiny"])
    grid = tiny_model.get_layer(GRADCAM_LAYERS["tiny"]).output.shape[1:3]

    _, heatmaps = gradcam(batch)

    assert heatmaps.shape == (len(batch), *grid)
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    # Each map is scaled to its own peak, or is all zero when nothing speaks for the class.
    peaks = heatmaps.max(axis=(1, 2))
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))


def test_both_classes_are_explained(tiny_model: keras.Model, batch: np.ndarray) -> None:
    gradcam = GradCam(tiny_model, GRADCAM_LAYERS["tiny"])

    probabilities_for, for_haemorrhage = gradcam(batch, positive=True)
    probabilities_against, for_normal = gradcam(batch, positive=False)

    np.testing.assert_array_equal(probabilities_for, probabilities_against)
    assert not np.allclose(for_haemorrhage, for_normal)


def test_predicted_class_is_explained_by_default(tiny_model: keras.Model, batch: np.ndarray) -> None:
    gradcam = GradCam(tiny_model, GRADCAM_LAYERS["tiny"])
    probabilities, _ = gradcam(batch)
    # A threshold at the median splits the batch into predicted positives and negatives.
    threshold = float(np.median(probabilities))
    predicted_positive = probabilities >= threshold
    assert predicted_positive.any() and not predicted_positive.all()

    _, by_prediction = gradcam(batch, threshold=threshold)
    _, by_given_class = gradcam(batch, positive=predicted_positive)

    np.testing.assert_allclose(by_prediction, by_given_class, atol=1e-6)


def test_both_weightings_agree_on_the_map_the_logit_pools(tiny_model: keras.Model, batch: np.ndarray) -> None:
    # The logit is a weighted mean of the last map, so every cell of a channel has the same
    # gradient and HiResCAM's per-cell weighting equals Grad-CAM's per-map one there.
    layer = GRADCAM_LAYERS["tiny"]
    _, mean_weighted = GradCam(tiny_model, layer)(batch, positive=True)
    _, cell_weighted = GradCam(tiny_model, layer, weighting="elementwise")(batch, positive=True)
    np.testing.assert_allclose(cell_weighted, mean_weighted, atol=1e-5)


def test_an_earlier_map_weighted_per_cell_differs_and_an_unknown_weighting_is_refused(
    tiny_model: keras.Model, batch: np.ndarray
) -> None:
    _, mean_weighted = GradCam(tiny_model, "tiny_conv1")(batch, positive=True)
    _, cell_weighted = GradCam(tiny_model, "tiny_conv1", weighting="elementwise")(batch, positive=True)
    assert mean_weighted.shape == cell_weighted.shape == (len(batch), 32, 32)
    assert cell_weighted.min() >= 0.0 and cell_weighted.max() <= 1.0
    assert not np.allclose(cell_weighted, mean_weighted, atol=1e-3)
    with pytest.raises(ValueError, match="Unknown heat-map weighting"):
        GradCam(tiny_model, layer_name=GRADCAM_LAYERS["tiny"], weighting="gradients")


def test_unknown_layer_is_rejected(tiny_model: keras.Model) -> None:
    with pytest.raises(ValueError, match="no layer 'conv5_block3_out'"):
        GradCam(tiny_model, "conv5_block3_out")


def test_a_classifier_explained_with_extra_outputs_gives_the_same_results(
    tiny_model: keras.Model, batch: np.ndarray
) -> None:
    layer = GRADCAM_LAYERS["tiny"]
    probabilities, heatmaps = GradCam(tiny_model, layer)(batch)

    plain = GradCam(tiny_model, layer).explain(batch)
    with_features = GradCam(tiny_model, layer, extra_outputs=(layer,)).explain(batch)

    assert plain.outputs == {}
    for result in (plain, with_features):
        np.testing.assert_array_equal(result.probabilities, probabilities)
        np.testing.assert_array_equal(result.heatmaps, heatmaps)
    features = keras.Model(tiny_model.inputs[0], tiny_model.get_layer(layer).output)(batch, training=False)
    np.testing.assert_allclose(with_features.outputs[layer], features, atol=1e-5)


@pytest.fixture(scope="module")
def multitask_model() -> keras.Model:
    keras.utils.set_random_seed(12)
    return build_multitask((SIZE, SIZE, 1), width=4)


def test_one_pass_gives_the_multitask_heads_beside_grad_cam(
    multitask_model: keras.Model, batch: np.ndarray
) -> None:
    joint = GradCam(multitask_model, GRADCAM_LAYER, extra_outputs=("subtypes", "mask"))

    result = joint.explain(batch, threshold=0.5)

    direct = multitask_model(batch, training=False)
    np.testing.assert_allclose(result.probabilities, direct["probability"].numpy()[:, 0], atol=1e-5)
    assert set(result.outputs) == {"subtypes", "mask"}
    np.testing.assert_allclose(result.outputs["subtypes"], direct["subtypes"], atol=1e-5)
    np.testing.assert_allclose(result.outputs["mask"], direct["mask"], atol=1e-5)
    assert result.outputs["mask"].shape == (len(batch), SIZE, SIZE, 6)
    # The heat maps are those of the probability head alone, as without the extra outputs.
    probabilities, heatmaps = GradCam(multitask_model, GRADCAM_LAYER)(batch, threshold=0.5)
    np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-6)
    np.testing.assert_allclose(result.heatmaps, heatmaps, atol=1e-5)
    assert joint(batch, threshold=0.5)[1].shape == heatmaps.shape


def test_an_unknown_extra_output_is_rejected(multitask_model: keras.Model) -> None:
    with pytest.raises(ValueError, match=r"no output or layer 'outline'.*'mask', 'probability', 'subtypes'"):
        GradCam(multitask_model, GRADCAM_LAYER, extra_outputs=("outline",))


def test_overlay_is_rgb_uint8_of_the_image_size() -> None:
    grayscale = np.random.default_rng(0).uniform(0, 1, (90, 120)).astype(np.float32)
    heatmap = np.zeros((16, 16), dtype=np.float32)
    heatmap[4:8, 4:8] = 1.0

    overlay = overlay_heatmap(grayscale, heatmap)

    assert overlay.shape == (90, 120, 3)
    assert overlay.dtype == np.uint8
    # Hot regions are coloured, cold ones keep their grey.
    assert np.ptp(overlay[30, 37].astype(int)) > 30
    np.testing.assert_array_equal(overlay[80, 110], np.round(grayscale[80, 110] * 255).astype(np.uint8))


def test_overlay_of_a_cold_map_is_the_grey_image() -> None:
    grayscale = np.random.default_rng(1).integers(0, 256, (40, 50), dtype=np.uint8)

    overlay = overlay_heatmap(grayscale, np.zeros((40, 50), dtype=np.float32))

    np.testing.assert_array_equal(overlay, np.repeat(grayscale[:, :, None], 3, axis=2))


def test_overlay_outlines_the_hot_region() -> None:
    grayscale = np.zeros((100, 100), dtype=np.uint8)
    heatmap = np.zeros((100, 100), dtype=np.float32)
    heatmap[30:70, 30:70] = 1.0

    overlay = overlay_heatmap(grayscale, heatmap, opacity=0.0)

    white = (overlay == 255).all(axis=2)
    assert white[30, 50] and white[50, 30]
    assert not white[50, 50] and not white[10, 10]


def test_overlay_rejects_colour_images() -> None:
    with pytest.raises(ValueError, match="2-D greyscale"):
        overlay_heatmap(np.zeros((10, 10, 3), dtype=np.uint8), np.zeros((10, 10), dtype=np.float32))


def test_trained_model_points_at_the_bleed() -> None:
    train_images, train_labels, _ = synthetic_slices(200, seed=0)
    test_images, test_labels, test_centres = synthetic_slices(40, seed=1)
    keras.utils.set_random_seed(0)
    model = build_classifier(input_shape=(SIZE, SIZE, 1), backbone="tiny")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])

    model.fit(train_images, train_labels, epochs=50, batch_size=32, verbose=0)

    _, train_accuracy = model.evaluate(train_images, train_labels, verbose=0)
    _, test_accuracy = model.evaluate(test_images, test_labels, verbose=0)
    assert train_accuracy >= 0.95
    assert test_accuracy >= 0.9
    positives = test_labels == 1
    _, heatmaps = GradCam(model, GRADCAM_LAYERS["tiny"])(test_images[positives], positive=True)
    # The model input is the whole image here: an identity geometry puts the map on its grid.
    geometry = Geometry(
        original_shape=(SIZE, SIZE), crop_box=(0, SIZE, 0, SIZE), pad=(0, 0), square_side=SIZE
    )
    distances = []
    for heatmap, centre in zip(heatmaps, test_centres[positives], strict=True):
        on_image = geometry.to_original(heatmap)
        peak = np.unravel_index(np.argmax(on_image), on_image.shape)
        distances.append(np.hypot(peak[0] - centre[0], peak[1] - centre[1]))
    # Blob radius is at most 4 pixels, one Grad-CAM cell is 4 pixels.
    assert np.mean(np.array(distances) <= 6.0) >= 0.8, f"distances {np.round(distances, 1)}"


def test_overlay_stretches_a_coarse_heatmap_over_the_image() -> None:
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[0, 0] = 1.0

    overlay = overlay_heatmap(np.zeros((64, 64), dtype=np.float32), heatmap, outline_level=1.1)

    # A black image stays black except where the stretched map is warm: the top-left cell.
    assert overlay.shape == (64, 64, 3)
    assert overlay[:8, :8].min() < overlay[:8, :8].max()
    assert overlay[:8, :8].sum() > 0
    assert overlay[32:, :].sum() == 0 and overlay[:, 32:].sum() == 0
