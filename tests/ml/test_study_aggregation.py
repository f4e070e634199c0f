"""Study-level aggregation of slice probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from ml.evaluation.study import aggregate, compare_aggregations


def test_max_is_the_most_suspicious_slice() -> None:
    assert aggregate([0.1, 0.7, 0.2], "max") == pytest.approx(0.7)


def test_top3_mean_averages_the_three_highest() -> None:
    assert aggregate([0.1, 0.9, 0.3, 0.6, 0.0], "top3_mean") == pytest.approx((0.9 + 0.6 + 0.3) / 3)
    assert aggregate([0.4, 0.8], "top3_mean") == pytest.approx(0.6)


def test_noisy_or_is_probability_of_any_positive() -> None:
    assert aggregate([0.5, 0.5], "noisy_or") == pytest.approx(0.75)
    assert aggregate([0.0, 0.0, 0.0], "noisy_or") == pytest.approx(0.0)
    assert aggregate([1.0, 0.0], "noisy_or") == pytest.approx(1.0, abs=1e-6)


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
    assert set(results) == {"max", "top3_mean", "noisy_or"}
    np.testing.assert_array_equal(results["max"]["labels"], [0, 1, 0])
    np.testing.assert_allclose(results["max"]["probabilities"], [0.2, 0.9, 0.05])
