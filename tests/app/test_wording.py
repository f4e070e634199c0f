"""Tests of the shared wording: verdicts, percentages, areas, volumes and the decision sentences."""

from __future__ import annotations

import pytest

from app.core.labels import Label
from app.core.wording import (
    AGGREGATION_TEXT,
    OUT_OF_SCOPE_VERDICT,
    VERDICTS,
    area_text,
    finding_sentence,
    format_percent,
    percent_pair,
    plural,
    study_decision_text,
    study_rule_sentences,
    volume_text,
)


def test_every_label_has_a_verdict() -> None:
    assert set(VERDICTS) == set(Label)
    assert VERDICTS[Label.HEMORRHAGE] == "Haemorrhage suspected"
    assert VERDICTS[Label.NO_HEMORRHAGE] == "No haemorrhage detected"
    assert OUT_OF_SCOPE_VERDICT == VERDICTS[Label.OUT_OF_SCOPE] == "Not a head CT slice"


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [(0.0, 0, "0%"), (1.0, 0, "100%"), (0.001, 1, "0.1%"), (0.0004, 1, "<0.1%"), (0.9996, 1, ">99.9%")],
)
def test_format_percent_never_rounds_to_the_ends(value: float, decimals: int, expected: str) -> None:
    assert format_percent(value, decimals) == expected


@pytest.mark.parametrize(
    ("probability", "threshold", "expected"),
    [
        (0.87, 0.5, ("87%", "50%")),
        (0.424, 0.42, ("42.4%", "42.0%")),
        (0.4201, 0.42, ("42.01%", "42.00%")),
        (0.42, 0.42, ("42%", "42%")),
    ],
)
def test_percent_pair_adds_decimals_only_while_they_tie(
    probability: float, threshold: float, expected: tuple[str, str]
) -> None:
    assert percent_pair(probability, threshold) == expected


def test_plural() -> None:
    assert [plural(count, "slice") for count in (0, 1, 2)] == ["0 slices", "1 slice", "2 slices"]


def test_area_text_in_square_millimetres_or_pixels() -> None:
    assert area_text(1234, 308.5) == "308.5 mm² (1,234 px)"
    assert area_text(1234, None) == "1,234 px"


def test_volume_text_in_millilitres_or_pixels() -> None:
    assert volume_text(1.234, 50) == "1.23 mL"
    assert volume_text(0.0, 0) == "0.00 mL"
    assert volume_text(None, 12345) == "12,345 px in all"


def test_finding_sentence_for_each_label() -> None:
    assert "probability of 87% is above its decision threshold of 50%" in finding_sentence(
        0.87, 0.5, Label.HEMORRHAGE
    )
    negative = finding_sentence(0.2, 0.5, Label.NO_HEMORRHAGE)
    assert "of 20% is below" in negative and "does not exclude haemorrhage" in negative
    assert "no haemorrhage assessment" in finding_sentence(0.9, 0.5, Label.OUT_OF_SCOPE)


def test_study_decision_text_names_the_aggregation_and_the_key_slice() -> None:
    positive = study_decision_text(0.91, 0.5, Label.HEMORRHAGE, "top3_mean", 1, 0)
    assert positive.startswith(
        f"Study probability 91% ({AGGREGATION_TEXT['top3_mean']}, aggregation 'top3_mean') over 1 slice, "
        "against a study threshold of 50%."
    )
    assert positive.endswith("Most likely on slice 1.")
    assert "Most likely" not in study_decision_text(0.91, 0.5, Label.HEMORRHAGE, "max", 3, None)
    negative = study_decision_text(0.1, 0.5, Label.NO_HEMORRHAGE, "custom", 3, 2)
    assert "(custom, aggregation 'custom') over 3 slices" in negative
    assert "Most likely" not in negative and "still needs review by a radiologist" in negative


def test_the_reports_print_with_the_shared_wording() -> None:
    from app.services import reporting

    assert reporting.format_percent is format_percent
    assert reporting.finding_sentence is finding_sentence


def test_the_study_rule_is_told_with_what_it_measured_on_held_out_patients() -> None:
    from ml.model_card import ModelCard

    card = ModelCard.from_mapping(
        {
            "name": "m",
            "version": "1",
            "study_threshold": 0.4,
            "metrics": {
                "test": {
                    "studies": {
                        "all": {"patients": 9, "sensitivity": {"value": 1.0, "count": "4/4"}},
                        "ct_ich": {
                            "patients": 9,
                            "sensitivity": {"value": 0.75, "ci95": [0.3, 0.95], "count": "3/4"},
                            "specificity": {"value": 0.8, "ci95": [0.38, 0.96], "count": "4/5"},
                        },
                        "phe_sich": {
                            "patients": 3,
                            "sensitivity": {"value": 1.0, "count": "3/3"},
                            "specificity": {"value": None, "ci95": [None, None], "count": "0/0"},
                        },
                        "broken": {"patients": "many"},
                    }
                }
            },
        }
    )
    text = " ".join(study_rule_sentences("top3_mean", 0.4, card.study_threshold, card.study_results()))
    assert "the mean of the three highest slice probabilities reaches the study threshold of 40.0%" in text
    assert (
        "On the CT-ICH test patients, the rule flagged 3/4 with haemorrhage (sensitivity 75%, 95% CI 30% to 95%)"
        in text
    )
    assert "cleared 4/5 without (specificity 80%, 95% CI 38% to 96%)" in text
    assert "PHE-SICH test patients (every one with a haemorrhage), the rule flagged 3/3" in text
    assert "site's operating point" not in text and "broken" not in text

    site = " ".join(study_rule_sentences("max", 0.7, 0.4, []))
    assert "site's operating point sets the study threshold" in site and "40.0%" in site
    assert "gives no measured sensitivity and specificity" in site


def test_the_rule_names_the_outline_criterion_when_the_card_has_one() -> None:
    from app.core.wording import study_rule_sentences

    with_outline = study_rule_sentences("top3_mean", 0.571, 0.571, [], outline_px=1361, grid=288)[0]
    assert "reaches the study threshold of 57.1%" in with_outline
    assert "or when the outline marks at least 1,361 pixels of blood across its slices" in with_outline
    assert "288 x 288 grid" in with_outline
    assert "outline" not in study_rule_sentences("top3_mean", 0.571, 0.571, [])[0]


def test_each_study_says_which_criterion_flagged_it() -> None:
    from app.core.wording import study_criteria_sentence

    assert study_criteria_sentence(["probability"], 0.8, 0.5, 10, None) is None
    alone = study_criteria_sentence(["outline"], 0.3, 0.5, 900, 361)
    assert alone is not None and alone.startswith(
        "This study was flagged by its outline: 900 outlined pixels"
    )
    assert "stays under the study threshold of 50.0%" in alone
    both = study_criteria_sentence(["probability", "outline"], 0.8, 0.5, 900, 361)
    assert both is not None and "both criteria" in both
    by_probability = study_criteria_sentence(["probability"], 0.8, 0.5, 12, 361)
    assert by_probability is not None and "its outline holds 12 outlined pixels" in by_probability
    cleared = study_criteria_sentence([], 0.3, 0.5, 12, 361)
    assert cleared is not None and cleared.startswith("Neither criterion flags this study")
    off = study_criteria_sentence([], 0.3, 0.5, None, 361)
    assert off is not None and "analysed without outlines" in off


def test_a_study_flagged_by_its_outline_alone_says_so_in_its_decision() -> None:
    from app.core.wording import study_decision_text

    text = study_decision_text(0.3, 0.5, "hemorrhage", "top3_mean", 30, 4, flagged_by_outline=True)
    assert "Haemorrhage suspected from the blood outlined across the series" in text
    assert "probability stays under the threshold" in text
