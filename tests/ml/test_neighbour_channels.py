"""Neighbouring slices as input channels: the series order, single images, and a network that
gains the channels without changing its answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.channel_experiment import inflate
from ml.data.datasets import Sample
from ml.models.classifier import build_classifier
from ml.neighbour_experiment import as_single, neighbour_indices, stacked


def _slice(patient: str, number: int, dataset: str = "ct_ich") -> Sample:
    return Sample(Path(f"Patients_CT/{patient}/brain/{number}.jpg"), 0, f"ct_ich-{patient}", dataset)


def test_neighbours_follow_the_slice_numbers_of_each_patient() -> None:
    # Out of order, two patients interleaved, slice 3 of patient a missing, one single image.
    samples = [_slice("a", 4), _slice("b", 1), _slice("a", 1), _slice("a", 2), _slice("b", 2)]
    samples.append(Sample(Path("images/007.png"), 1, "head_ct-007", "head_ct"))
    table = neighbour_indices(samples)
    # a: 1 (index 2), 2 (index 3), 4 (index 0); b: 1 (index 1), 2 (index 4).
    np.testing.assert_array_equal(table[2], [2, 2, 3])
    np.testing.assert_array_equal(table[3], [2, 3, 0])
    np.testing.assert_array_equal(table[0], [3, 0, 0])
    np.testing.assert_array_equal(table[1], [1, 1, 4])
    np.testing.assert_array_equal(table[4], [1, 4, 4])
    np.testing.assert_array_equal(table[5], [5, 5, 5])


def test_stacked_channels_and_single_images() -> None:
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2, 1)
    table = np.array([[0, 0, 1], [0, 1, 2], [1, 2, 2]])
    channels = stacked(images, table)
    assert channels.shape == (3, 2, 2, 3)
    np.testing.assert_array_equal(channels[1, ..., 0], images[0, ..., 0])
    np.testing.assert_array_equal(channels[1, ..., 2], images[2, ..., 0])
    single = as_single(channels)
    for column in range(3):
        np.testing.assert_array_equal(single[..., column], images[..., 0])


def test_a_classifier_gains_neighbour_channels_without_changing_its_answer() -> None:
    rng = np.random.default_rng(1)
    source = build_classifier((32, 32, 1), "compact", width=4)
    source.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in source.get_weights()])
    twin = build_classifier((32, 32, 3), "compact", width=4)
    inflate(source, twin, position=1)
    images = rng.random((4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        twin.predict(images, verbose=0), source.predict(images[..., 1:2], verbose=0), atol=1e-5
    )
