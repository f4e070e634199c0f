"""The input experiments: neighbouring slices as channels (the series order, single images, a
network gaining the channels without changing its answer) and quarter turns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.channel_experiment import inflate
from ml.data.datasets import Sample
from ml.evaluation.robustness import rotate_quarter_turn
from ml.models.classifier import build_classifier
from ml.neighbour_experiment import as_single, neighbour_indices, stacked
from ml.quarter_turn_experiment import training_data, turned


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


def test_turned_slices_are_the_robustness_tests_quarter_turn() -> None:
    images = np.random.default_rng(2).random((3, 8, 8, 1)).astype(np.float32)
    for image, turned_image in zip(images, turned(images), strict=True):
        np.testing.assert_array_equal(turned_image, rotate_quarter_turn(image))


def test_quarter_turn_batches_turn_the_share_asked_for() -> None:
    # A horizontal bar: flips, small rotations, shifts and zooms keep it horizontal; only a
    # quarter turn (one or three) stands it upright.
    image = np.zeros((1, 48, 48, 1), np.uint8)
    image[0, 22:26, 8:40, 0] = 255
    images = np.repeat(image, 96, axis=0)
    labels, weights = np.zeros(96), np.ones(96)

    def upright_share(share: float) -> float:
        upright = []
        for batch, batch_labels, batch_weights in training_data(images, labels, weights, 32, share, seed=3):
            assert batch.shape == (32, 48, 48, 1)
            assert batch_labels.shape == batch_weights.shape == (32,)
            for item in batch.numpy()[..., 0]:
                # The bar is the brightest part of the image, whatever contrast it was given.
                rows, cols = np.nonzero(item > 0.5 * (item.max() + item.min()))
                upright.append(rows.var() > cols.var())
        return float(np.mean(upright))

    assert upright_share(0.0) == 0.0
    # Turns of one, two or three quarters in equal shares: two in three stand the bar upright.
    assert 0.45 < upright_share(1.0) < 0.85
