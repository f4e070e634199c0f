"""Tests of :mod:`ml.evaluation.metrics` on hand-made examples whose answers are worked out here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ml.evaluation.metrics import (
    METRIC_NAMES,
    binary_metrics,
    bootstrap_intervals,
    choose_threshold,
    confusion_counts,
    mean_source_auc,
    patient_level,
    sensitivity_at_specificity,
    summarize,
    wilson_interval,
)

# Three positives and five negatives. At threshold 0.5 the predictions are
# positive for indices 0, 1 (true positives), 3, 4 (false positives):
# TP = 2, FN = 1 (index 2), FP = 2, TN = 3.
LABELS = [1, 1, 1, 0, 0, 0, 0, 0]
PROBABILITIES = [0.9, 0.6, 0.4, 0.7, 0.55, 0.1, 0.3, 0.2]


def _width(interval: tuple[float, float]) -> float:
    return interval[1] - interval[0]


class TestBinaryMetrics:
    def test_hand_computed_example(self) -> None:
        metrics = binary_metrics(LABELS, PROBABILITIES, threshold=0.5)
        assert set(metrics) == set(METRIC_NAMES)
        assert metrics["accuracy"] == pytest.approx((2 + 3) / 8)
        assert metrics["sensitivity"] == pytest.approx(2 / 3)
        assert metrics["specificity"] == pytest.approx(3 / 5)
        assert metrics["precision"] == pytest.approx(2 / 4)
        assert metrics["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
        # AUC = share of (positive, negative) pairs ranked correctly:
        # 0.9 beats 5 negatives, 0.6 beats 4, 0.4 beats 3 -> 12 of 15.
        assert metrics["auc"] == pytest.approx(12 / 15)

    def test_threshold_is_inclusive(self) -> None:
        metrics = binary_metrics([1, 0], [0.5, 0.49], threshold=0.5)
        assert metrics["sensitivity"] == 1.0
        assert metrics["specificity"] == 1.0

    def test_confusion_counts_agree(self) -> None:
        assert confusion_counts(LABELS, PROBABILITIES, 0.5) == {"tp": 2, "fn": 1, "tn": 3, "fp": 2}

    def test_undefined_metrics_are_nan_without_positives(self) -> None:
        metrics = binary_metrics([0, 0], [0.2, 0.7], threshold=0.5)
        assert math.isnan(metrics["sensitivity"])
        assert math.isnan(metrics["auc"])
        assert metrics["specificity"] == pytest.approx(1 / 2)
        # One false positive and nothing else: precision and F1 are defined and zero.
        assert metrics["precision"] == 0.0
        assert metrics["f1"] == 0.0
        assert metrics["accuracy"] == pytest.approx(1 / 2)

    def test_precision_and_f1_are_nan_when_nothing_is_predicted_or_present(self) -> None:
        metrics = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], threshold=0.5)
        assert math.isnan(metrics["precision"])
        assert math.isnan(metrics["f1"])
        assert metrics["specificity"] == 1.0

    def test_specificity_is_nan_without_negatives(self) -> None:
        metrics = binary_metrics([1, 1], [0.9, 0.1], threshold=0.5)
        assert math.isnan(metrics["specificity"])
        assert math.isnan(metrics["auc"])
        assert metrics["sensitivity"] == pytest.approx(1 / 2)

    def test_mismatched_lengths_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="3 labels but 2 probabilities"):
            binary_metrics([0, 1, 1], [0.1, 0.2], 0.5)

    def test_labels_other_than_zero_and_one_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="0 or 1"):
            binary_metrics([0, 2], [0.1, 0.2], 0.5)


class TestChooseThreshold:
    def test_hand_example(self) -> None:
        # Ten positives; 90% sensitivity allows one miss, so the threshold is the second lowest.
        labels = [1] * 10 + [0] * 3
        probabilities = [0.05, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.1, 0.5, 0.99]
        assert choose_threshold(labels, probabilities, 0.9) == 0.2
        assert choose_threshold(labels, probabilities, 1.0) == 0.05
        assert choose_threshold(labels, probabilities, 0.5) == 0.6

    @pytest.mark.parametrize("seed", range(6))
    @pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
    def test_is_the_highest_threshold_reaching_the_target(self, seed: int, target: float) -> None:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 2, size=60)
        labels[:2] = (0, 1)
        # Rounded scores make ties, which the threshold must handle.
        probabilities = np.round(rng.random(60) * 0.5 + 0.4 * labels, 2)
        threshold = choose_threshold(labels, probabilities, target)
        assert binary_metrics(labels, probabilities, threshold)["sensitivity"] >= target
        higher = np.nextafter(threshold, np.inf)
        assert binary_metrics(labels, probabilities, higher)["sensitivity"] < target

    def test_without_positives_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            choose_threshold([0, 0], [0.1, 0.2])

    @pytest.mark.parametrize("target", [0.0, -0.5, 1.5])
    def test_target_outside_unit_interval_is_rejected(self, target: float) -> None:
        with pytest.raises(ValueError, match="target_sensitivity"):
            choose_threshold([1, 0, 1], [0.2, 0.3, 0.9], target)


class TestPatientLevel:
    def test_max_aggregation(self) -> None:
        labels = [0, 1, 0, 0, 0, 0]
        probabilities = [0.2, 0.6, 0.9, 0.1, 0.3, 0.05]
        groups = ["b", "a", "b", "c", "a", "c"]
        patient_labels, patient_probs, names = patient_level(labels, probabilities, groups)
        assert names == ["a", "b", "c"]
        assert patient_labels.tolist() == [1, 0, 0]
        # Patient b is negative but its most suspicious slice (0.9) is its score.
        assert patient_probs.tolist() == [0.6, 0.9, 0.1]

    def test_group_count_must_match(self) -> None:
        with pytest.raises(ValueError, match="2 groups for 3 slices"):
            patient_level([0, 1, 0], [0.1, 0.2, 0.3], ["a", "b"])


class TestSensitivityAtSpecificity:
    # Ten negatives 0.05, 0.1 ... 0.9 and four positives. Allowing k false positives means
    # thresholding just above the (k+1)-th highest negative.
    NEGATIVES = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    POSITIVES = [0.95, 0.85, 0.75, 0.3]

    @pytest.mark.parametrize(
        ("specificity", "expected"),
        [
            (1.0, 1 / 4),  # no false positive: only 0.95 is above 0.9
            (0.9, 2 / 4),  # one (0.9): 0.95 and 0.85
            (0.8, 3 / 4),  # two (0.9, 0.8): 0.95, 0.85, 0.75
            (0.75, 3 / 4),  # still two: 2.5 false positives are not possible
            (0.0, 1.0),
        ],
    )
    def test_known_roc(self, specificity: float, expected: float) -> None:
        labels = [0] * len(self.NEGATIVES) + [1] * len(self.POSITIVES)
        probabilities = self.NEGATIVES + self.POSITIVES
        assert sensitivity_at_specificity(labels, probabilities, specificity) == pytest.approx(expected)

    def test_nan_with_one_class(self) -> None:
        assert math.isnan(sensitivity_at_specificity([1, 1], [0.2, 0.9]))


def _reasonable_sample(seed: int = 0, size: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=size)
    probabilities = np.clip(0.3 * labels + 0.35 + rng.normal(0, 0.2, size=size), 0, 1)
    return labels, probabilities


class TestBootstrapIntervals:
    def test_intervals_contain_the_point_estimate(self) -> None:
        labels, probabilities = _reasonable_sample()
        point = binary_metrics(labels, probabilities, 0.5)
        intervals = bootstrap_intervals(labels, probabilities, 0.5, num_resamples=150, seed=1)
        assert set(intervals) == set(METRIC_NAMES)
        for name in METRIC_NAMES:
            low, high = intervals[name]
            assert low <= point[name] <= high, name
            assert 0.0 <= low < high <= 1.0, name

    def test_deterministic_with_a_seed(self) -> None:
        labels, probabilities = _reasonable_sample()
        first = bootstrap_intervals(labels, probabilities, 0.5, num_resamples=40, seed=5)
        second = bootstrap_intervals(labels, probabilities, 0.5, num_resamples=40, seed=5)
        other = bootstrap_intervals(labels, probabilities, 0.5, num_resamples=40, seed=6)
        assert first == second
        assert first != other

    def test_higher_confidence_gives_wider_intervals(self) -> None:
        labels, probabilities = _reasonable_sample()
        narrow = bootstrap_intervals(labels, probabilities, 0.5, num_resamples=100, confidence=0.5)
        wide = bootstrap_intervals(labels, probabilities, 0.5, num_resamples=100, confidence=0.95)
        for name in METRIC_NAMES:
            assert _width(wide[name]) > _width(narrow[name]), name

    def test_resampling_patients_widens_intervals_of_duplicated_slices(self) -> None:
        # 30 patients with 10 identical slices each: the slices add no information, so
        # resampling patients must give wider intervals than treating 300 slices as independent.
        labels, probabilities = _reasonable_sample(seed=2, size=30)
        slices_per_patient = 10
        slice_labels = np.repeat(labels, slices_per_patient)
        slice_probs = np.repeat(probabilities, slices_per_patient)
        groups = [f"patient-{index}" for index in np.repeat(np.arange(30), slices_per_patient)]
        clustered = bootstrap_intervals(slice_labels, slice_probs, 0.5, groups, num_resamples=100, seed=0)
        independent = bootstrap_intervals(slice_labels, slice_probs, 0.5, None, num_resamples=100, seed=0)
        per_patient = bootstrap_intervals(labels, probabilities, 0.5, None, num_resamples=100, seed=0)
        for name in ("accuracy", "sensitivity", "specificity", "auc"):
            assert _width(clustered[name]) >= _width(independent[name]), name
            # About sqrt(10) wider: the effective sample is 30 patients, not 300 slices.
            assert _width(clustered[name]) > 2 * _width(independent[name]), name
            # Drawing whole patients of identical slices is drawing the patients themselves.
            assert clustered[name] == pytest.approx(per_patient[name], abs=1e-9), name

    def test_metric_never_defined_gives_nan_interval(self) -> None:
        intervals = bootstrap_intervals([0, 0, 0], [0.1, 0.6, 0.3], 0.5, num_resamples=20)
        low, high = intervals["sensitivity"]
        assert math.isnan(low) and math.isnan(high)
        assert intervals["specificity"][0] <= 2 / 3 <= intervals["specificity"][1]


class TestSummarize:
    def test_is_json_serialisable_without_nan(self) -> None:
        summary = summarize(LABELS, PROBABILITIES, 0.5, num_resamples=50)
        text = json.dumps(summary, allow_nan=False)
        loaded = json.loads(text)
        assert loaded["n"] == 8
        assert loaded["n_positive"] == 3
        assert loaded["threshold"] == 0.5
        assert loaded["confusion"] == {"tp": 2, "fn": 1, "tn": 3, "fp": 2}
        assert loaded["metrics"]["sensitivity"]["value"] == round(2 / 3, 4)
        assert loaded["metrics"]["auc"]["value"] == round(12 / 15, 4)
        assert set(loaded["metrics"]) == set(METRIC_NAMES)
        for name in METRIC_NAMES:
            assert len(loaded["metrics"][name]["ci95"]) == 2

    def test_undefined_metrics_become_null(self) -> None:
        summary = summarize([0, 0, 0, 0], [0.1, 0.7, 0.2, 0.3], 0.5, num_resamples=30)
        loaded = json.loads(json.dumps(summary, allow_nan=False))
        assert loaded["metrics"]["sensitivity"]["value"] is None
        assert loaded["metrics"]["sensitivity"]["ci95"] == [None, None]
        assert loaded["metrics"]["auc"]["value"] is None
        assert loaded["sensitivity_at_specificity_0.90"] is None
        assert loaded["metrics"]["specificity"]["value"] == 0.75

    def test_with_groups_and_numpy_inputs(self) -> None:
        labels = np.array([1, 1, 0, 0, 1, 0], dtype=np.int64)
        probabilities = np.array([0.9, 0.8, 0.2, 0.4, 0.3, 0.6], dtype=np.float32)
        groups = ["a", "a", "b", "b", "c", "d"]
        summary = summarize(labels, probabilities, 0.5, groups=groups, num_resamples=40, seed=3)
        json.dumps(summary, allow_nan=False)
        assert isinstance(summary["n"], int) and isinstance(summary["n_positive"], int)
        assert all(isinstance(value, int) for value in summary["confusion"].values())


def test_wilson_interval_matches_the_formula_and_stays_in_range() -> None:
    # 45 of 52: p = 0.865, Wilson 95% interval 0.747 to 0.933 (by hand from the score formula).
    assert wilson_interval(45, 52) == pytest.approx([0.7473, 0.9332], abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.25 < high < 0.35  # unlike the normal approximation, not [0, 0]
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == [None, None]


def test_mean_source_auc_ignores_which_source_has_more_positives() -> None:
    # Inside each source the ranking is perfect, but source "a" (mostly positive) sits above
    # source "b" (mostly negative): the pooled AUC rewards that, the mean of sources does not.
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    sources = ["a", "a", "a", "a", "b", "b", "b", "b"]
    perfect = np.array([0.9, 0.9, 0.9, 0.8, 0.3, 0.2, 0.2, 0.2])
    assert mean_source_auc(labels, perfect, sources) == pytest.approx(1.0)
    # Source "b" ranked backwards: its AUC is 0, the mean 0.5, while pooled AUC stays high.
    backwards = np.array([0.9, 0.9, 0.9, 0.8, 0.1, 0.2, 0.2, 0.2])
    assert mean_source_auc(labels, backwards, sources) == pytest.approx(0.5)
    assert binary_metrics(labels, backwards, 0.5)["auc"] > 0.7


def test_mean_source_auc_skips_one_label_sources_and_checks_lengths() -> None:
    labels = np.array([1, 0, 1, 1])
    probabilities = np.array([0.9, 0.1, 0.2, 0.3])
    assert mean_source_auc(labels, probabilities, ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert math.isnan(mean_source_auc(labels[2:], probabilities[2:], ["b", "b"]))
    with pytest.raises(ValueError, match="source"):
        mean_source_auc(labels, probabilities, ["a", "b"])
