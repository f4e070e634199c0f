"""The model card: what a bundle is, how to serve it and what it is worth, checked once when read.

A card is the JSON file beside ``model.keras`` (:data:`CARD_FILE`). Training and evaluation write
it as a plain mapping; readers get a :class:`ModelCard`, whose fields the service and the pages
use by name. Fields a card may lack (older and small cards) are ``None`` or empty; what a kind of
bundle needs in order to serve is checked by :meth:`ModelCard.check_servable`. The mapping as
written stays available as :attr:`ModelCard.raw` (the API returns it unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from ml.errors import DataError

__all__ = [
    "CARD_FILE",
    "CLASSIFICATION_KIND",
    "KINDS",
    "MULTITASK_KIND",
    "SEGMENTATION_KIND",
    "ModelCard",
    "Proportion",
    "StudyResult",
    "TrainingSummary",
    "check_servable",
]

CARD_FILE = "model_card.json"
# A classifier: a probability and a Grad-CAM heat map per slice (a card without ``kind``).
CLASSIFICATION_KIND = "classification"
# Outlines by subtype on a slice (``ml.models.unet``).
SEGMENTATION_KIND = "segmentation"
# A classifier bundle whose model also has the segmentation heads (``ml.models.multitask``).
MULTITASK_KIND = "multitask"
KINDS = (CLASSIFICATION_KIND, SEGMENTATION_KIND, MULTITASK_KIND)
# Card fields that say how per-pixel probabilities become outlines.
OUTLINE_FIELDS = ("blood_threshold", "min_component_px")
# What a classifier (or multitask) card needs before its model can serve.
CLASSIFIER_FIELDS = ("name", "version", "threshold", "gradcam_layer", "preprocessing")
# What a segmentation card needs before its model can serve.
SEGMENTATION_FIELDS = ("name", "version", "preprocessing", *OUTLINE_FIELDS)


class TrainingSummary(BaseModel):
    """How the model was trained: collections, split, counts per split, time and hardware."""

    model_config = ConfigDict(frozen=True, extra="allow", coerce_numbers_to_str=True)

    datasets: list[str] | None = None
    split: str | None = None
    split_manifest: str | None = None
    # Images (or slices), positives and patients per split, as each trainer counts them.
    counts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    epochs_run: int | None = None
    seconds: float | None = None
    hardware: str | None = None


class Proportion(BaseModel):
    """A measured share with its count (``"4/5"``) and 95% interval; ``value`` is None when
    nothing was there to count."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    value: float | None = None
    ci95: list[float | None] | None = None
    count: str = ""


class StudyResult(BaseModel):
    """The study rule on one collection's held-out test patients."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    collection: str
    patients: int
    sensitivity: Proportion
    specificity: Proportion


class ModelCard(BaseModel):
    """One model card, typed; :meth:`from_mapping` checks it once, where it is read."""

    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True)

    name: str
    version: str
    kind: str = CLASSIFICATION_KIND
    task: str | None = None
    created: str | None = None
    backbone: str | None = None
    parameters: int | None = None
    input_shape: list[int] | None = None
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    # Classifiers: the slice threshold and how it was chosen, the study rule, the Grad-CAM layer.
    threshold: float | None = None
    threshold_rule: str | None = None
    study_threshold: float | None = None
    study_aggregation: str | None = None
    # Multitask models: a study is also flagged when its outlined pixels, summed over the series
    # on the model grid, reach this count (``ml.evaluation.study_outline``); absent, it is not.
    study_outline_px: int | None = Field(default=None, ge=1)
    gradcam_layer: str | None = None
    # Segmentation and multitask models: how probabilities become outlines, and of which subtypes.
    blood_threshold: float | None = None
    min_component_px: int | None = None
    subtypes: list[str] | None = None
    cpu_latency_ms_per_slice: float | None = None
    training: TrainingSummary = Field(default_factory=TrainingSummary)
    # Split -> collection -> level -> measures, as ``ml.evaluation`` writes them.
    metrics: dict[str, Any] = Field(default_factory=dict)
    robustness: dict[str, Any] = Field(default_factory=dict)
    pointing_game: dict[str, Any] = Field(default_factory=dict)
    intended_use: str | None = None
    limitations: list[str] = Field(default_factory=list)
    reproduce: str | None = None

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("kind", mode="before")
    @classmethod
    def _classification_unless_said(cls, value: Any) -> Any:
        # Cards written before there were several kinds say nothing: they are classifiers.
        return value or CLASSIFICATION_KIND

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: Path | str = "The model card") -> ModelCard:
        """The card in ``data`` (a card file's JSON object), checked.

        Raises:
            DataError: a field holds a value of the wrong type; the message names ``source``
                (the card file) and each field.
        """
        try:
            card = cls.model_validate(dict(data))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or 'card'}: {item['msg']}"
                for item in error.errors()
            )
            raise DataError(f"{source} is not a usable model card: {problems}.") from error
        # The mapping itself, not a copy: the bundle's card and this one are the same object.
        card._raw = data if isinstance(data, dict) else dict(data)
        return card

    @property
    def raw(self) -> dict[str, Any]:
        """The card as written, every field included (the API's answer, and older readers')."""
        return self._raw

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the card as written (``dict.get``), for readers of fields it does not type."""
        return self._raw.get(key, default)

    @property
    def outlines(self) -> bool:
        """Whether the model draws outlines: a segmentation or a multitask model."""
        return self.kind in (SEGMENTATION_KIND, MULTITASK_KIND)

    def study_results(self) -> list[StudyResult]:
        """What the card's study rule gave on the held-out test patients, per collection of
        series (``metrics.test.studies``, written by ``ml.multitask_bundle``); empty when the
        card does not say."""
        studies = (
            self.metrics.get("test", {}).get("studies")
            if isinstance(self.metrics.get("test"), dict)
            else None
        )
        if not isinstance(studies, dict):
            return []
        results = []
        for collection, entry in studies.items():
            try:
                results.append(StudyResult.model_validate({"collection": collection, **entry}))
            except (TypeError, ValidationError):
                continue
        return results

    def check_servable(self, source: Path | str = "The model card") -> None:
        """Check that the card has what its kind needs to serve (:func:`check_servable`)."""
        check_servable(self._raw, source)


def check_servable(data: Mapping[str, Any], source: Path | str = "The model card") -> None:
    """Check that a card's mapping has what its kind needs to serve.

    Raises:
        DataError: the kind is unknown, or a field the kind needs is missing.
    """
    kind = data.get("kind") or CLASSIFICATION_KIND
    if kind not in KINDS:
        raise DataError(f"{source} says its model is of the unknown kind {kind!r}; known: {KINDS}.")
    if kind == SEGMENTATION_KIND:
        outline_fields: tuple[str, ...] = SEGMENTATION_FIELDS
    else:
        missing = [key for key in CLASSIFIER_FIELDS if key not in data]
        if missing:
            raise DataError(f"{source} lacks the field {missing[0]!r}.")
        outline_fields = OUTLINE_FIELDS if kind == MULTITASK_KIND else ()
    missing = [key for key in outline_fields if key not in data]
    if missing:
        raise DataError(f"{source} lacks the field(s) {missing}.")
