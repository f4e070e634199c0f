"""The operating point a classifier decides with: the model card's, or the one a site chose.

A site sets its own for the served model (the newest version of ``ICH_DEFAULT_MODEL``) with a
file written by ``python -m ml.evaluate --choose-threshold ... --write-operating-point FILE``
(``ICH_OPERATING_POINT``) and/or explicit thresholds (``ICH_SLICE_THRESHOLD``,
``ICH_STUDY_THRESHOLD``, which win over the file's). Every decision records the threshold and
the description of where it came from, so that a later change never rewrites a stored result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.config import Settings
from app.core.errors import InvalidSettings
from app.db import CARD_OPERATING_POINT
from ml.evaluation.study import study_rule
from ml.model_io import discover_models, read_card
from ml.operating_point import OperatingPointError, load_operating_point

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Threshold:
    """One decision threshold and where it came from, as results name it."""

    value: float
    source: str

    @property
    def from_site(self) -> bool:
        return self.source != CARD_OPERATING_POINT

    def flags(self, probability: float) -> bool:
        """Whether a probability is called haemorrhage at this threshold (at or above it)."""
        return probability >= self.value


@dataclass(frozen=True)
class OperatingPointInUse:
    """How one classifier decides: the slice threshold, and the study threshold and aggregation."""

    slice: Threshold
    study: Threshold
    aggregation: str

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> OperatingPointInUse:
        """The model card's thresholds (``threshold``, ``study_threshold``) and ``study_aggregation``."""
        threshold = float(card["threshold"])
        aggregation, study_threshold, problems = study_rule(card, threshold)
        for problem in problems:
            logger.warning("Model card %s/%s: %s.", card.get("name"), card.get("version"), problem)
        return cls(
            slice=Threshold(threshold, CARD_OPERATING_POINT),
            study=Threshold(study_threshold, CARD_OPERATING_POINT),
            aggregation=aggregation,
        )

    @property
    def from_site(self) -> bool:
        return self.slice.from_site or self.study.from_site


def site_operating_point(settings: Settings, card: Mapping[str, Any] | None) -> OperatingPointInUse | None:
    """The site's operating point for the served model whose card is ``card``; None when the
    settings name none.

    Raises:
        InvalidSettings: the file cannot be read or is not an operating point, it was chosen for
            another model or version than the one served, or no model is served at all.
    """
    if not settings.has_site_operating_point:
        return None
    if card is None:
        raise InvalidSettings(
            f"A site operating point is set, but the default model {settings.default_model!r} is not in "
            f"{settings.model_store}; there is no model to apply it to. Fix ICH_DEFAULT_MODEL or "
            "ICH_MODEL_STORE, or unset ICH_OPERATING_POINT, ICH_SLICE_THRESHOLD and ICH_STUDY_THRESHOLD."
        )
    card_point = OperatingPointInUse.from_card(card)
    slice_threshold, study_threshold = card_point.slice, None
    if settings.operating_point is not None:
        try:
            point = load_operating_point(settings.operating_point)
            point.check_model(str(card["name"]), str(card["version"]), card_point.aggregation)
        except OperatingPointError as exc:
            raise InvalidSettings(
                f"ICH_OPERATING_POINT={settings.operating_point} is refused: {exc}"
            ) from exc
        slice_threshold = Threshold(point.slice_threshold, point.slice_source())
        study_source = point.study_source()
        if point.study_threshold is not None and study_source is not None:
            study_threshold = Threshold(point.study_threshold, study_source)
    if settings.slice_threshold is not None:
        slice_threshold = Threshold(
            settings.slice_threshold, f"site setting ICH_SLICE_THRESHOLD={settings.slice_threshold:g}"
        )
    if settings.study_threshold is not None:
        study_threshold = Threshold(
            settings.study_threshold, f"site setting ICH_STUDY_THRESHOLD={settings.study_threshold:g}"
        )
    if study_threshold is None:
        # A card without a study threshold decides studies at the slice threshold; so does a site.
        # (-1 stands for the slice threshold here, to tell whether the card names a usable one.)
        card_names_one = study_rule(card, -1.0)[1] >= 0.0
        study_threshold = card_point.study if card_names_one else slice_threshold
    return OperatingPointInUse(
        slice=slice_threshold, study=study_threshold, aggregation=card_point.aggregation
    )


def served_card(settings: Settings) -> dict[str, Any] | None:
    """The card of the model that will serve (the newest version of ``ICH_DEFAULT_MODEL``),
    read without loading the model; None when the store has none."""
    versions = discover_models(settings.model_store).get(settings.default_model)
    if not versions:
        return None
    try:
        return read_card(versions[-1])
    except (OSError, ValueError):
        return None


def check_operating_point(settings: Settings) -> None:
    """Refuse to start with an operating point that cannot be used (see :func:`site_operating_point`)."""
    if not settings.has_site_operating_point:
        return
    point = site_operating_point(settings, served_card(settings))
    if point is not None:
        logger.info(
            "Site operating point: slices at %.6g (%s), studies at %.6g (%s).",
            point.slice.value,
            point.slice.source,
            point.study.value,
            point.study.source,
        )
