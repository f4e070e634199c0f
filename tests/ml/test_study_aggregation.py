"""Study-level aggregation of slice probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from ml.evaluation.study import aggregate, compare_aggregations, study_rule


def test_max_is_the_most_suspicious_slice() -> None:
    assert aggregate([0.1, 0.7, 0.2], "max") == pytest.approx(0.7)


def test_top3_mean_averages_the_three_highest() -> None:
    assert aggregate([0.1, 0.9, 0.3, 0.6, 0.0], "top3_mean") == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert aggregate([0.4, 0.8], "top3_mean") == pytest.approx(0.6)


def test_noisy_or_is_probability_of_any_positive() -> None:
    assert aggregate([0.5, 0.5], "noisy_or") == pytest.approx(0.75)
    assert aggregate([0.0, 0.0, 0.0], "noisy_or") == pytest.approx(0.0)
    assert aggregate([1.0, 0.0], "noisy_or") == pytest.approx(1.0, abs=1e-6)


def test_neighbour_pair_needs_two_adjacent_slices() -> None:
    # One bright slice between quiet neighbours counts for little; two adjacent ones count fully.
    assert aggregate([0.1, 0.9, 0.2, 0.1], "neighbour_pair") == pytest.approx(0.2)
    assert aggregate([0.1, 0.8, 0.7, 0.1], "neighbour_pair") == pytest.approx(0.7)
    # Series order matters: the same values apart from each other are not a pair.
    assert aggregate([0.8, 0.1, 0.7, 0.1], "neighbour_pair") == pytest.approx(0.1)
    assert aggregate([0.6], "neighbour_pair") == pytest.approx(0.6)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="Unknown aggregation"):
        aggregate([0.1], "median")
    with pytest.raises(ValueError, match="at least one"):
        aggregate([], "max")


def test_compare_aggregations_groups_by_patient() -> None:
    labels = [0, 0, 1, 0, 0]
    probabilities = [0.1, 0.2, 0.9, 0.3, 0.05]
    groups = ["a", "a", "b", "b", "c"]
    results = compare_aggregations(labels, probabilities, groups)
    assert set(results) == {"max", "top3_mean", "noisy_or", "neighbour_pair"}
    np.testing.assert_array_equal(results["max"]["labels"], [0, 1, 0])
    np.testing.assert_allclose(results["max"]["probabilities"], [0.2, 0.9, 0.05])


def test_study_rule_reads_the_card() -> None:
    card = {"study_aggregation": "top3_mean", "study_threshold": 0.66}
    assert study_rule(card, 0.2) == ("top3_mean", 0.66, [])


def test_study_rule_falls_back_to_the_most_suspicious_slice_and_the_slice_threshold() -> None:
    # A card written before the study rule existed: nothing to complain about.
    assert study_rule({}, 0.2) == ("max", 0.2, [])
    aggregation, threshold, problems = study_rule({"study_aggregation": "median"}, 0.2)
    assert (aggregation, threshold) == ("max", 0.2)
    assert len(problems) == 1 and "median" in problems[0]
    for bad in ("0.5", 1.5, -0.1, True):
        aggregation, threshold, problems = study_rule(
            {"study_aggregation": "top3_mean", "study_threshold": bad}, 0.2
        )
        assert (aggregation, threshold) == ("top3_mean", 0.2), bad
        assert len(problems) == 1 and "study_threshold" in problems[0], bad
