"""The outline criterion of the study rule: outlined pixels across a series."""

from __future__ import annotations

import numpy as np
import pytest

from ml.evaluation.study_outline import (
    choose_outline_rule,
    grid_blood_px,
    series_sums,
    spaced_midpoints,
    study_flags,
)


def test_outlined_pixels_follow_the_served_post_processing() -> None:
    blood = np.zeros((2, 32, 32), np.float32)
    blood[0, 2:12, 2:12] = 0.95  # 100 pixels above the threshold
    blood[0, 20:22, 20:22] = 0.99  # 4 pixels: a component under the smallest size
    blood[1, 5:15, 5:15] = 0.5  # below the blood threshold
    np.testing.assert_array_equal(grid_blood_px(blood, 0.9, 10), [100, 0])
    np.testing.assert_array_equal(grid_blood_px(blood, 0.9, 1), [104, 0])


def test_series_sums_are_per_patient_in_sorted_order() -> None:
    np.testing.assert_array_equal(series_sums([1, 2, 3, 4], ["b", "a", "b", "c"]), [2, 4, 4])


def test_thresholds_never_sit_between_patients_closer_than_the_gap() -> None:
    points = spaced_midpoints([0.2, 0.5, 0.51, 0.8], gap=0.02)
    assert points[0] < 0.2 and points[-1] > 0.8
    inner = points[1:-1]
    assert inner == pytest.approx([0.35, 0.655])
    volumes = spaced_midpoints([100, 120, 400], ratio=1.25)
    assert volumes[1:-1] == pytest.approx([np.sqrt(120 * 400)])


def test_either_criterion_flags_a_study() -> None:
    scores = np.array([0.9, 0.1, 0.1])
    volumes = np.array([0, 800, 10])
    np.testing.assert_array_equal(study_flags(scores, volumes, 0.5, 500), [True, True, False])
    np.testing.assert_array_equal(study_flags(scores, volumes, 0.5, None), [True, False, False])


def test_the_rule_rescues_a_small_bleed_and_clears_normal_patients() -> None:
    # Patient 0 bleeds but scores low; its outline is large. Normals score in the middle.
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.20, 0.80, 0.70, 0.40, 0.45, 0.60])
    volumes = np.array([900.0, 1500.0, 300.0, 100.0, 0.0, 250.0])
    normal = labels == 0
    rule = choose_outline_rule(labels, scores, volumes, normal, 0.95)
    assert rule is not None
    flagged = study_flags(scores, volumes, rule["threshold"], rule["outline_px"])
    assert flagged[labels == 1].all()
    assert rule["ct_ich_normal_cleared"] == 3 and not flagged[normal].any()
    # The lowest thresholds that do so: just above the normals, with room on both sides.
    assert 0.6 < rule["threshold"] < 0.7
    assert 300 < rule["outline_px"] < 900


def test_no_rule_when_sensitivity_cannot_be_reached() -> None:
    labels = np.array([1, 0])
    assert choose_outline_rule(labels, np.array([0.5, 0.5]), np.array([1.0, 1.0]), labels == 0, 1.5) is None


def test_the_service_counts_the_pixels_the_rule_was_chosen_on() -> None:
    # The service's outlines (ml.segmenter.Outlining) and the bundle's evaluation count the same
    # pixels of the same network output, whatever the size of the uploaded image.
    from ml.data.preprocessing import Geometry
    from ml.segmenter import Outlining

    rng = np.random.default_rng(5)
    logits = rng.normal(size=(32, 32, 6)).astype(np.float32)
    logits[8:20, 8:20, 2] += 6.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    outlining = Outlining(blood_threshold=0.9, min_component_px=12)
    geometry = Geometry(original_shape=(512, 400), crop_box=(40, 480, 20, 380), pad=(0, 40), square_side=440)
    result = outlining.result(probabilities, np.zeros(5), geometry)
    expected = grid_blood_px((1.0 - probabilities[..., 0])[np.newaxis], 0.9, 12)[0]
    assert result.grid_blood_px == expected > 0
    assert result.class_map.shape == (512, 400)
