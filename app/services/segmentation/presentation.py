"""The outlines in words and rows, for the pages and the reports alike.

What the outlines are worth (read from the segmentation model's card), each subtype's row of the
legend, and a study's volumes as sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from app.core.wording import area_text
from app.services.card_views import ABSENT_WHEN_INVALID, CardPart, Count, Measure, Number, absent_when_invalid
from app.services.details import (
    SliceSegmentationRecord,
    SliceSubtype,
    StudySegmentationRecord,
    StudySubtype,
)
from app.services.segmentation.records import finite_float
from ml.data.segmentation import SUBTYPE_COLOURS, SUBTYPES
from ml.evaluation.segmentation import POINTING_GAME_TARGET
from ml.segmenter import MULTITASK_KIND

SUBTYPE_TITLES = {
    "epidural": "Epidural",
    "intraparenchymal": "Intraparenchymal",
    "intraventricular": "Intraventricular",
    "subarachnoid": "Subarachnoid",
    "subdural": "Subdural",
}
# Below this share of test slices where the heat map's peak lies in the bleed, users are told
# that the heat map often does not point at the bleed.
POINTING_GAME_POOR = POINTING_GAME_TARGET


def colour_hex(name: str) -> str:
    """A subtype's outline colour as ``#rrggbb``."""
    red, green, blue = SUBTYPE_COLOURS[name]
    return f"#{red:02x}{green:02x}{blue:02x}"


class _Slices(CardPart):
    slices: Count = None


class _Training(CardPart):
    # Per split of each collection (``bhsd_train``, ``bhsd_test`` ...), as the trainers count them.
    counts: Annotated[dict[str, _Slices], absent_when_invalid(dict)] = Field(default_factory=dict)


class _BloodSegmentation(CardPart):
    dice: Measure = Measure()


class _Segmentation(CardPart):
    any_blood: _BloodSegmentation = _BloodSegmentation()


class _TestMetrics(CardPart):
    segmentation: _Segmentation = _Segmentation()


class _Metrics(CardPart):
    test: _TestMetrics = _TestMetrics()


class _PointingGame(CardPart):
    hit_rate: Number = None
    slices: Count = None


class _PointingGames(CardPart):
    # On the test volumes (the segmentation trainer), else on every slice of the segmentation set.
    test_volumes: _PointingGame = _PointingGame()
    all_bhsd_seg_slices: _PointingGame = _PointingGame()


class OutlineCard(CardPart):
    """What the card of the model that draws the outlines says they are worth, read once.

    The parts :func:`help_sentences` reads: the name, version and kind, the training counts of
    slices with hand-drawn outlines (``training.counts.bhsd_*``), the test Dice of any blood
    (``metrics.test.segmentation.any_blood.dice``) and the Grad-CAM pointing game. A card that
    lacks a part, or holds a value of the wrong type there (older cards), reads as not saying it.
    """

    name: Annotated[str, absent_when_invalid("the segmentation model")] = "the segmentation model"
    version: Annotated[str, absent_when_invalid("")] = ""
    kind: Annotated[str | None, ABSENT_WHEN_INVALID] = None
    training: _Training = _Training()
    metrics: _Metrics = _Metrics()
    pointing_game: _PointingGames = _PointingGames()

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> OutlineCard:
        """The view of a card's mapping (a card file's JSON object, ``ModelCard.raw``)."""
        return cls.model_validate(dict(card))

    @property
    def labelled_slices(self) -> tuple[int | None, int | None]:
        """``(slices with hand-drawn outlines, those kept for testing)``; None where the card does not say."""
        counts = self.training.counts
        numbers = [
            entry.slices
            for key, entry in counts.items()
            if key.startswith("bhsd_") and entry.slices is not None
        ]
        test = counts["bhsd_test"].slices if "bhsd_test" in counts else None
        return (sum(numbers) if numbers else None), test

    @property
    def any_blood_dice(self) -> tuple[float | None, list[float] | None]:
        """The test Dice of the outlines (any blood), with its 95% interval when the card has one."""
        dice = self.metrics.test.segmentation.any_blood.dice
        return dice.value, dice.ci95

    @property
    def pointing(self) -> tuple[float | None, int | None]:
        """How often the Grad-CAM peak fell inside the bleed on test slices, and on how many slices."""
        for game in (self.pointing_game.test_volumes, self.pointing_game.all_bhsd_seg_slices):
            if game.hit_rate is not None:
                return game.hit_rate, game.slices
        return None, None


def help_sentences(card: Mapping[str, Any]) -> list[str]:
    """What a user must know about the outlines and the heat map, in plain words, from the card
    (its mapping as written) of the model that draws the outlines."""
    view = OutlineCard.from_card(card)
    name, version = view.name, view.version
    labelled, test = view.labelled_slices
    if labelled is not None:
        held = f", {test} of them kept apart for testing" if test else ""
        trained = f"trained on only {labelled} labelled slices (slices with hand-drawn outlines{held})"
    else:
        trained = "trained on only a small number of slices with hand-drawn outlines"
    # A multitask model draws the outlines with its own mask head, beside its probability.
    source = "the mask head of the classifier" if view.kind == MULTITASK_KIND else "a segmentation model"
    sentences = [f"The coloured outlines come from {source} ({name} {version}".rstrip() + f") {trained}."]
    dice, interval = view.any_blood_dice
    if dice is not None:
        ci = f" (95% CI {interval[0]:.2f} to {interval[1]:.2f})" if interval else ""
        sentences.append(
            f"On held-out scans its outlines matched the hand-drawn ones with a Dice of {dice:.2f}{ci}, "
            "where 1 is a perfect match and 0 no overlap: outlines can miss blood and can mark blood "
            "that is not there."
        )
    else:
        sentences.append(
            "Its outlines have not been measured against hand-drawn ones; treat them with caution."
        )
    rate, slices = view.pointing
    if rate is not None:
        on = (
            f" of {slices} test slices with a labelled bleed"
            if slices
            else " of test slices with a labelled bleed"
        )
        if rate < POINTING_GAME_POOR:
            sentences.append(
                f"The Grad-CAM heat map's hottest point lay inside the bleed on only {rate:.0%}{on} "
                "(pointing game), so the heat map often does not point at the bleed: it shows what "
                "raised the probability, not where the blood is."
            )
        else:
            sentences.append(
                f"The Grad-CAM heat map's hottest point lay inside the bleed on {rate:.0%}{on} (pointing game)."
            )
    sentences.append("Areas and volumes are measured on the outlines and are only as good as they are.")
    return sentences


@dataclass(frozen=True)
class LegendRow:
    """One subtype's row of the legend: its colour and name, probability and outlined amount.

    ``area_mm2`` is known on a slice with a pixel spacing, ``volume_ml`` on a study with one.
    """

    name: str
    title: str
    colour: str
    rgb: tuple[int, int, int]
    probability: float
    area_px: int
    area_mm2: float | None
    volume_ml: float | None

    @property
    def area(self) -> str:
        """The outlined area in words (mm² where known, else pixels)."""
        return area_text(self.area_px, self.area_mm2)

    @property
    def present(self) -> bool:
        return self.area_px > 0


def legend(record: SliceSegmentationRecord | StudySegmentationRecord) -> list[LegendRow]:
    """One row per subtype for the result page and the report, from a slice's or a study's outlines."""
    rows = []
    for name in SUBTYPES:
        entry = record.subtypes.get(name)
        # A subtype missing from an old record was neither likely nor outlined.
        probability = (finite_float(entry.probability) if entry is not None else None) or 0.0
        rows.append(
            LegendRow(
                name=name,
                title=SUBTYPE_TITLES[name],
                colour=colour_hex(name),
                rgb=SUBTYPE_COLOURS[name],
                probability=probability,
                area_px=entry.area_px if entry is not None else 0,
                area_mm2=finite_float(entry.area_mm2) if isinstance(entry, SliceSubtype) else None,
                volume_ml=finite_float(entry.volume_ml) if isinstance(entry, StudySubtype) else None,
            )
        )
    return rows


FALLBACK_NOTE = (
    "The outlines come from a segmentation model trained on few labelled slices; check every outline "
    "against the images."
)


SPACING_SOURCES = {"positions": "the slice positions", "slice_thickness": "the DICOM SliceThickness"}


def study_summary_sentences(stored: StudySegmentationRecord) -> list[str]:
    """The study's volumes in words: voxel count and ABC/2, or why there is no volume."""
    volume = finite_float(stored.volume_ml)
    if volume is None:
        return [stored.volume_unavailable_reason or "No volume could be worked out."]
    if not stored.blood_area_px:
        return ["No blood was outlined on any slice."]
    spacing = stored.pixel_spacing_mm or [0.0, 0.0]
    between = finite_float(stored.slice_spacing_mm) or 0.0
    source = SPACING_SOURCES.get(str(stored.slice_spacing_source), "the DICOM attributes")
    sentences = [
        f"Outlined blood volume {volume:.1f} mL by voxel counting: {stored.blood_area_px:,} pixels of "
        f"{spacing[0]:.2f} x {spacing[1]:.2f} mm, {between:.2f} mm apart (from {source})."
    ]
    abc2 = stored.abc2
    if abc2 is not None:
        sentences.append(
            f"Bedside ABC/2 estimate from the same outlines: {abc2.volume_ml:.1f} mL "
            f"(A {abc2.a_mm:.1f} mm, B {abc2.b_mm:.1f} mm, C {abc2.c_mm:.1f} mm)."
        )
    return sentences
