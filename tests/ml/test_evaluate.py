"""ml.evaluate: a threshold for a site's own images, and patients decided as studies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.evaluate import main, site_operating_point, site_threshold, study_report
from ml.model_io import ModelBundle
from ml.operating_point import OperatingPoint


def test_site_threshold_keeps_the_sensitivity_and_sets_the_card_beside_it() -> None:
    # Ten positives and ten negatives; the card's threshold (0.2) flags every negative above it.
    labels = np.array([1] * 10 + [0] * 10)
    probabilities = np.array(
        [0.95, 0.9, 0.9, 0.85, 0.8, 0.8, 0.75, 0.7, 0.65, 0.3]
        + [0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.25, 0.1, 0.05]
    )
    report = site_threshold(labels, probabilities, 0.9, card_threshold=0.2)
    chosen, card = report["chosen"], report["card"]
    # The highest threshold missing at most one positive: the second-lowest positive score.
    assert chosen["threshold"] == pytest.approx(0.65)
    assert chosen["sensitivity"] == pytest.approx(0.9)
    assert chosen["confusion"] == {"tp": 9, "fn": 1, "fp": 0, "tn": 10}
    assert chosen["specificity"] == pytest.approx(1.0)
    assert card["threshold"] == pytest.approx(0.2)
    assert card["sensitivity"] == pytest.approx(1.0)
    assert card["specificity"] == pytest.approx(0.2)
    assert report["target_sensitivity"] == 0.9
    assert "optimistic" in report["note"]


def test_site_threshold_needs_positives_and_a_sensible_target() -> None:
    with pytest.raises(ValueError, match="positive"):
        site_threshold(np.zeros(4, int), np.linspace(0, 1, 4), 0.95, 0.5)
    with pytest.raises(ValueError, match="target_sensitivity"):
        site_threshold(np.array([0, 1]), np.array([0.1, 0.9]), 1.5, 0.5)


def test_study_report_decides_each_patient_as_the_service_decides_a_study() -> None:
    card = {
        "name": "m",
        "version": "1",
        "threshold": 0.3,
        "study_aggregation": "top3_mean",
        "study_threshold": 0.5,
    }
    bundle = ModelBundle(model=None, card=card, path=Path("."))
    # Patient a: one noisy slice at 0.9 among quiet ones (top-3 mean 0.37, negative study);
    # patient b: three suspicious slices (0.6); patient c: quiet. Only b has haemorrhage.
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 3
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    probabilities = np.array([0.9, 0.1, 0.1, 0.05, 0.1, 0.6, 0.6, 0.6, 0.1, 0.2, 0.1])
    report = study_report(bundle, labels, probabilities, groups, resamples=20)
    assert report["aggregation"] == "top3_mean" and report["threshold"] == pytest.approx(0.5)
    assert report["n"] == 3 and report["n_positive"] == 1
    assert report["confusion"] == {"tp": 1, "fn": 0, "fp": 0, "tn": 2}
    # "Any slice above the slice threshold" would have called patient a positive.
    assert probabilities[:4].max() >= card["threshold"]


def test_study_report_applies_the_outline_criterion_of_the_card() -> None:
    card = {
        "name": "m",
        "version": "1",
        "kind": "multitask",
        "threshold": 0.3,
        "study_aggregation": "max",
        "study_threshold": 0.5,
        "study_outline_px": 100,
        "blood_threshold": 0.9,
        "min_component_px": 10,
    }
    bundle = ModelBundle(model=None, card=card, path=Path("."))
    # Patient a bleeds with low probabilities but 120 outlined pixels over two slices; b is normal
    # with 90 (under the criterion); c bleeds with a high probability and no outline.
    groups = ["a", "a", "b", "b", "c"]
    labels = np.array([1, 1, 0, 0, 1])
    probabilities = np.array([0.2, 0.3, 0.2, 0.1, 0.8])
    outlined = np.array([70, 50, 90, 0, 0])
    report = study_report(bundle, labels, probabilities, groups, resamples=20, outlined_px=outlined)
    # The probability alone misses patient a; the whole rule does not.
    assert report["confusion"]["fn"] == 1
    rule = report["rule"]
    assert rule["outline_px"] == 100 and rule["flagged_by_outline_alone"] == 1
    assert rule["sensitivity"] == {"count": "2/2", "value": 1.0}
    assert rule["specificity"] == {"count": "1/1", "value": 1.0}
    # A card without the criterion reports the probability alone.
    plain = ModelBundle(model=None, card={**card, "study_outline_px": None}, path=Path("."))
    assert "rule" not in study_report(
        plain, labels, probabilities, groups, resamples=20, outlined_px=outlined
    )


def test_site_operating_point_keeps_the_sensitivity_per_slice_and_per_patient(tmp_path: Path) -> None:
    card = {"name": "m", "version": "2", "threshold": 0.2, "study_aggregation": "max", "study_threshold": 0.3}
    bundle = ModelBundle(model=None, card=card, path=Path("."))
    # Patients a and b have haemorrhage (their top slices 0.8 and 0.55); c and d do not (0.6, 0.1).
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0])
    probabilities = np.array([0.8, 0.45, 0.1, 0.55, 0.2, 0.1, 0.6, 0.3, 0.1, 0.05])
    point = site_operating_point(bundle, labels, probabilities, groups, 1.0, "site.csv")
    # Every positive slice kept: the lowest positive, 0.45, written as it is, not rounded.
    assert point.slice_threshold == 0.45
    assert point.chosen_on.slice.sensitivity == 1.0
    assert point.chosen_on.slice.specificity == pytest.approx(6 / 7, abs=1e-4)
    # Per patient, with the card's aggregation (max): both bleeding patients kept, c flagged too.
    assert point.study_threshold == 0.55 and point.study_aggregation == "max"
    assert point.chosen_on.study is not None
    assert (point.chosen_on.study.patients, point.chosen_on.study.specificity) == (4, 0.5)
    assert (point.chosen_on.images, point.chosen_on.positive_images, point.chosen_on.labels) == (
        10,
        3,
        "site.csv",
    )
    assert (point.model.name, point.model.version) == ("m", "2")
    assert point.created == OperatingPoint.today()

    without_patients = site_operating_point(bundle, labels, probabilities, None, 1.0, "site.csv")
    assert without_patients.study_threshold is None and without_patients.chosen_on.study is None


def test_site_operating_point_refuses_a_saturated_threshold() -> None:
    bundle = ModelBundle(model=None, card={"name": "m", "version": "2", "threshold": 0.2}, path=Path("."))
    with pytest.raises(ValueError, match="cannot be an operating point.*saturates"):
        site_operating_point(bundle, np.array([1, 0]), np.array([1.0, 0.2]), None, 0.95, "site.csv")


def test_write_operating_point_needs_choose_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--model-dir", "m", "--labels", "l.csv", "--write-operating-point", "point.json"])
    assert "--write-operating-point needs --choose-threshold" in capsys.readouterr().err
