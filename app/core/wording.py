"""The words and numbers a reader sees: verdicts, percentages, areas, volumes and findings.

The PDF reports and the web pages say the same things about a result; writing each phrase and
each number format once keeps them saying it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.core.labels import Label
from ml.model_card import Proportion, StudyResult

NOT_GIVEN = "not given"
# What each label is called where a person reads it.
VERDICTS: dict[str, str] = {
    Label.HEMORRHAGE: "Haemorrhage suspected",
    Label.NO_HEMORRHAGE: "No haemorrhage detected",
    Label.OUT_OF_SCOPE: "Not a head CT slice",
}
OUT_OF_SCOPE_VERDICT = VERDICTS[Label.OUT_OF_SCOPE]
AGGREGATION_TEXT = {
    "max": "the highest slice probability",
    "top3_mean": "the mean of the three highest slice probabilities",
    "noisy_or": "the probability that at least one slice is positive (noisy-OR)",
    "neighbour_pair": "the highest probability that two neighbouring slices both reach (the lower of each adjacent pair)",
}


def format_percent(value: float, decimals: int = 0) -> str:
    """Format a fraction as a percentage that never rounds a non-zero value to 0% or 100%.

    Args:
        value: fraction in [0, 1].
        decimals: digits after the decimal point.

    Returns:
        For example ``"87%"``, ``"<1%"`` or ``">99%"``.
    """
    percent = value * 100.0
    text = f"{percent:.{decimals}f}"
    smallest = 10.0**-decimals
    if 0.0 < percent and float(text) == 0.0:
        return f"<{smallest:g}%"
    if percent < 100.0 and float(text) == 100.0:
        return f">{100.0 - smallest:g}%"
    return f"{text}%"


def percent_pair(probability: float, threshold: float) -> tuple[str, str]:
    """Probability and threshold as percentages, with a decimal when whole numbers would tie.

    A reader compares the two: "42% against 42%" for a positive result would look contradictory.
    """
    for decimals in (0, 1, 2):
        pair = format_percent(probability, decimals), format_percent(threshold, decimals)
        if pair[0] != pair[1] or probability == threshold:
            return pair
    return pair


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, with an ``s`` unless there is exactly one (``"1 slice"``, ``"3 slices"``)."""
    return f"{count} {noun}{'s' if count != 1 else ''}"


def area_text(area_px: int, area: float | None) -> str:
    """An outlined area in square millimetres with its pixel count, or in pixels without a spacing."""
    if area is not None:
        return f"{area:,.1f} mm² ({area_px:,} px)"
    return f"{area_px:,} px"


def volume_text(volume_ml: float | None, area_px: int) -> str:
    """A subtype's volume in millilitres, or its outlined pixels over the study without a volume."""
    if volume_ml is not None:
        return f"{volume_ml:.2f} mL"
    return f"{area_px:,} px in all"


def finding_sentence(probability: float, threshold: float, label: str) -> str:
    """The plain-language explanation of a slice's finding.

    Args:
        probability: model probability of haemorrhage, in [0, 1].
        threshold: the model's decision threshold, in [0, 1].
        label: ``"hemorrhage"``, ``"no_hemorrhage"`` or ``"out_of_scope"``.

    Returns:
        One or two sentences of plain text.
    """
    if label == Label.OUT_OF_SCOPE:
        return (
            "The image does not look like a brain-window head CT slice, so no haemorrhage assessment "
            "was made; the model's output for it means nothing. Send an axial head CT slice."
        )
    shown_probability, shown_threshold = percent_pair(probability, threshold)
    if label == Label.HEMORRHAGE:
        relation = "above" if probability > threshold else "at"
        return (
            f"The model's probability of {shown_probability} is {relation} its decision threshold of "
            f"{shown_threshold}; a radiologist should review this slice promptly."
        )
    relation = "below" if probability < threshold else "at"
    return (
        f"The model's probability of {shown_probability} is {relation} its decision threshold of "
        f"{shown_threshold}. A negative result does not exclude haemorrhage; the slice and the whole "
        "study still need review by a radiologist."
    )


def study_decision_text(
    probability: float,
    threshold: float,
    label: str,
    aggregation: str,
    num_slices: int,
    key_slice_index: int | None,
    flagged_by_outline: bool = False,
) -> str:
    """The plain-language study decision, naming the aggregation and the most probable slice.

    Args:
        probability: study probability of haemorrhage, in [0, 1].
        threshold: the study decision threshold, in [0, 1].
        label: ``"hemorrhage"`` or ``"no_hemorrhage"``.
        aggregation: how slice probabilities became the study's (a key of ``AGGREGATION_TEXT``).
        num_slices: slices analysed.
        key_slice_index: the most probable slice's index from 0, when there is one.
        flagged_by_outline: the outline criterion flagged the study although the probability
            stays under the threshold.
    """
    shown_probability, shown_threshold = percent_pair(probability, threshold)
    method = AGGREGATION_TEXT.get(aggregation, aggregation)
    lead = (
        f"Study probability {shown_probability} ({method}, aggregation '{aggregation}') "
        f"over {plural(num_slices, 'slice')}, against a study threshold of {shown_threshold}."
    )
    if label == Label.HEMORRHAGE:
        if flagged_by_outline:
            return (
                f"{lead} Haemorrhage suspected from the blood outlined across the series, although the "
                "probability stays under the threshold: a radiologist should review this study promptly."
            )
        where = f" Most likely on slice {key_slice_index + 1}." if key_slice_index is not None else ""
        return f"{lead} Haemorrhage suspected: a radiologist should review this study promptly.{where}"
    return (
        f"{lead} No haemorrhage detected. A negative result does not exclude haemorrhage; the study "
        "still needs review by a radiologist."
    )


# How the collections of held-out series are named to a reader.
SERIES_COLLECTIONS = {
    "all": "all held-out test patients",
    "ct_ich": "CT-ICH test patients",
    "phe_sich": "PHE-SICH test patients (every one with a haemorrhage)",
}


def _share(proportion: Proportion) -> str:
    if proportion.value is None:
        return "not measurable"
    text = format_percent(proportion.value)
    if proportion.ci95 and len(proportion.ci95) == 2:
        low, high = proportion.ci95
        if low is not None and high is not None:
            text += f", 95% CI {format_percent(low)} to {format_percent(high)}"
    return text


def _outline_criterion(outline_px: int, grid: int | None) -> str:
    where = f"the model's {grid} x {grid} grid of the head" if grid else "the model's grid of the head"
    return f"the outline marks at least {outline_px:,} pixels of blood across its slices (counted on {where})"


def study_rule_sentences(
    aggregation: str,
    threshold: float,
    card_threshold: float | None,
    results: Sequence[StudyResult],
    outline_px: int | None = None,
    grid: int | None = None,
) -> list[str]:
    """How a study decision is made and what that rule measured on held-out patients.

    Args:
        aggregation: how slice probabilities became the study's (a key of ``AGGREGATION_TEXT``).
        threshold: the study threshold the decision used.
        card_threshold: the model card's own study threshold (the one its figures are for).
        results: the card's study figures per collection (``ModelCard.study_results``).
        outline_px: the card's outline criterion (``study_outline_px``), when it has one.
        grid: the side of the model's input grid, in pixels.
    """
    method = AGGREGATION_TEXT.get(aggregation, aggregation)
    rule = f"A study is flagged when {method} reaches the study threshold of {format_percent(threshold, 1)}"
    if outline_px is not None:
        rule += (
            f", or when {_outline_criterion(outline_px, grid)}: the outline finds small bleeds that "
            "the slice probabilities score low"
        )
    sentences = [
        f"{rule}. The rule and its thresholds were chosen on validation patients to flag at least 95% "
        "of the patients with haemorrhage while clearing as many patients without as possible: "
        "missing a bleeding patient is the error it avoids first."
    ]
    if card_threshold is not None and abs(card_threshold - threshold) > 1e-6:
        sentences.append(
            f"This site's operating point sets the study threshold; the figures below are for the "
            f"model's own threshold of {format_percent(card_threshold, 1)}."
        )
    measured = [result for result in results if result.collection != "all"] or list(results)
    if not measured:
        sentences.append(
            "The model card gives no measured sensitivity and specificity of this rule on held-out "
            "patients; see the model page for what was measured."
        )
    for result in measured:
        name = SERIES_COLLECTIONS.get(result.collection, f"{result.collection} test patients")
        parts = []
        if result.sensitivity.value is not None:
            parts.append(
                f"flagged {result.sensitivity.count} with haemorrhage (sensitivity {_share(result.sensitivity)})"
            )
        if result.specificity.value is not None:
            parts.append(
                f"cleared {result.specificity.count} without (specificity {_share(result.specificity)})"
            )
        if parts:
            sentences.append(f"On the {name}, the rule {' and '.join(parts)}.")
    return sentences


def study_criteria_sentence(
    flagged_by: Sequence[str],
    probability: float,
    threshold: float,
    outline_px: int | None,
    outline_threshold_px: int | None,
) -> str | None:
    """Which criterion flagged this study (or why none did); ``None`` for a rule without the
    outline criterion, where the verdict says it all."""
    if outline_threshold_px is None:
        return None
    score = f"the study probability of {format_percent(probability, 1)}"
    if outline_px is None:
        return (
            "The outline criterion could not apply: this study was analysed without outlines, so "
            f"only {score} was compared with the study threshold of {format_percent(threshold, 1)}."
        )
    outlined = f"{outline_px:,} outlined pixels of blood (criterion: {outline_threshold_px:,})"
    if list(flagged_by) == ["outline"]:
        return (
            f"This study was flagged by its outline: {outlined}, although {score} stays under the "
            f"study threshold of {format_percent(threshold, 1)}."
        )
    if "outline" in flagged_by:
        return f"This study was flagged by both criteria: {score} and {outlined}."
    if flagged_by:
        return f"This study was flagged by {score}; its outline holds {outlined}."
    return (
        f"Neither criterion flags this study: {score} stays under the study threshold of "
        f"{format_percent(threshold, 1)}, and its outline holds {outlined}."
    )
