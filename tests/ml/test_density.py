"""The density channel: Hounsfield units to a map, on the image's own grid, and a network that
gains the channel without changing its answer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.channel_experiment import inflate, normals_cleared
from ml.data.datasets import Sample, read_ct_ich
from ml.data.density import (
    BONE_GREY_AT_ZERO_HU,
    BONE_GREY_PER_HU,
    density_from_hounsfield,
    density_on_grid,
    hounsfield_from_bone_window,
    preprocess_with_density,
)
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.density_experiment import bone_path
from ml.models.classifier import build_classifier


def test_blood_is_not_dense_and_calcification_is() -> None:
    hounsfield = np.array([-1000.0, 0.0, 40.0, 90.0, 110.0, 185.0, 260.0, 1500.0])
    density = density_from_hounsfield(hounsfield)
    assert density.dtype == np.float32
    np.testing.assert_allclose(density[:5], 0.0)
    assert 0.4 < density[5] < 0.6
    np.testing.assert_allclose(density[6:], 1.0)


def test_bone_window_grey_levels_read_back_as_hounsfield_units() -> None:
    for hounsfield in (0.0, 70.0, 400.0):
        grey = BONE_GREY_AT_ZERO_HU + BONE_GREY_PER_HU * hounsfield
        assert hounsfield_from_bone_window(np.array([grey]))[0] == pytest.approx(hounsfield, abs=0.01)


def _head(shape: tuple[int, int], offset: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A brain-window image (head with a dense spot) and its density map, placed at ``offset``."""
    image = np.zeros(shape, np.uint8)
    density = np.zeros(shape, np.float32)
    centre = (offset[1] + 60, offset[0] + 70)
    cv2.ellipse(image, centre, (50, 60), 0, 0, 360, 255, -1)
    cv2.ellipse(image, centre, (44, 54), 0, 0, 360, 110, -1)
    cv2.ellipse(density, centre, (50, 60), 0, 0, 360, 1.0, 6)
    cv2.circle(image, (centre[0] + 15, centre[1]), 5, 255, -1)
    cv2.circle(density, (centre[0] + 15, centre[1]), 5, 1.0, -1)
    # Letters in a corner, outside the head: blanked in both channels.
    cv2.putText(image, "R", (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    letters = np.zeros(shape, np.uint8)
    cv2.putText(letters, "R", (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1, 1)
    density = np.maximum(density, letters.astype(np.float32))
    return image, density


def test_density_follows_the_image_geometry_wherever_the_head_lies() -> None:
    config = PreprocessConfig(image_size=64)
    inputs = [preprocess_with_density(*_head((200, 260), offset), config) for offset in ((20, 30), (60, 120))]
    for pair in inputs:
        assert pair.shape == (64, 64, 2)
        image, density = pair[..., 0], pair[..., 1]
        # The dense ring and spot sit on the bright skull and spot of the image.
        assert float(image[density > 0.5].mean()) > 0.8
        assert float(density[image < 0.3].max(initial=0.0)) < 0.5
    # Where the head lies on the canvas does not change the model input.
    np.testing.assert_allclose(inputs[0], inputs[1], atol=1e-5)


def test_unknown_density_is_a_blank_channel_and_a_mismatched_map_is_refused() -> None:
    config = PreprocessConfig(image_size=32)
    image, density = _head((200, 260), (20, 30))
    pair = preprocess_with_density(image, None, config)
    np.testing.assert_array_equal(pair[..., 1], 0.0)
    np.testing.assert_allclose(pair[..., 0], preprocess(image, config).image[..., 0])
    with pytest.raises(ValueError, match="density map is 100x100"):
        density_on_grid(np.zeros((100, 100), np.float32), preprocess(image, config), config)


def test_a_classifier_gains_the_channel_without_changing_its_answer() -> None:
    rng = np.random.default_rng(0)
    source = build_classifier((32, 32, 1), "compact", width=4)
    # Move the weights off their initial values so that the copy is tested, not the seed.
    source.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in source.get_weights()])
    twin = build_classifier((32, 32, 2), "compact", width=4)
    inflate(source, twin)
    images = rng.random((4, 32, 32, 2)).astype(np.float32)
    np.testing.assert_allclose(
        twin.predict(images, verbose=0), source.predict(images[..., :1], verbose=0), atol=1e-5
    )


def test_normal_patients_cleared_at_the_threshold_that_flags_every_bleeding_one() -> None:
    def sample(patient: str, label: int) -> Sample:
        return Sample(Path(f"{patient}.jpg"), label, patient, "ct_ich")

    samples = [sample("a", 1), sample("a", 0), sample("b", 0), sample("c", 0), sample("h", 1)]
    probabilities = np.array([0.9, 0.1, 0.3, 0.95, 0.5])
    report = normals_cleared(probabilities, samples, "max")
    assert report == {"bleeding_patients": 2, "normal_patients": 2, "normal_cleared": 1, "threshold": 0.5}


def test_every_ct_ich_brain_slice_has_its_bone_window_twin(data_dir: Path) -> None:
    samples = read_ct_ich(data_dir)
    twins = [bone_path(sample) for sample in samples]
    assert sum(twin is not None for twin in twins) >= len(samples) - 1
    first = next(i for i, twin in enumerate(twins) if twin is not None)
    brain = cv2.imread(str(samples[first].path), cv2.IMREAD_GRAYSCALE)
    bone = cv2.imread(str(twins[first]), cv2.IMREAD_GRAYSCALE)
    assert brain.shape == bone.shape
