"""Typed views of the free-form parts of a model card, read field by field and lenient where cards vary.

:class:`ml.model_card.ModelCard` checks a card once where it is read, but its measures are mappings
that each trainer and evaluation writes in its own shape, and older or hand-made cards lack parts or
hold them differently. The views here read such parts as typed fields: :class:`CardPart` is their
base (a part that is not a JSON object reads as empty), :func:`absent_when_invalid` makes a field of
the wrong type read as absent, :class:`Measure` is one measured value with its 95% interval, and
:class:`CardMetrics` is what the model page shows of ``metrics``: each split's collections with
their slice and patient measures, and the sensitivity on the collection the model never saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)


def absent_when_invalid(default: Any = None) -> WrapValidator:
    """A field of the wrong type reads as absent (``default``): an older or hand-made card still
    gets its help. Numbers and names are read strictly (no bools, no strings, no NaN or infinity)."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            return default() if callable(default) else default

    return WrapValidator(validate)


ABSENT_WHEN_INVALID = absent_when_invalid()
# The field types the views read: a count, a number, a 95% interval (both bounds).
Count = Annotated[int | None, ABSENT_WHEN_INVALID]
Number = Annotated[float | None, ABSENT_WHEN_INVALID]
Interval = Annotated[list[float] | None, Field(min_length=2, max_length=2), ABSENT_WHEN_INVALID]


class CardPart(BaseModel):
    """A part of the card; one that is not a JSON object reads as empty."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _object_or_empty(cls, value: Any) -> Any:
        return value if isinstance(value, dict | cls) else {}


class Measure(CardPart):
    """One measured value and its 95% interval (both bounds, or none)."""

    value: Number = None
    ci95: Interval = None


class LevelMeasures(CardPart):
    """One collection's measures at one level (per slice or per patient): counts and each metric."""

    n: Count = None
    n_positive: Count = None
    metrics: Annotated[dict[str, Measure], absent_when_invalid(dict)] = Field(default_factory=dict)


class CollectionMeasures(CardPart):
    """One collection's measures in one split, per slice and per patient."""

    slice: LevelMeasures = LevelMeasures()
    patient: LevelMeasures = LevelMeasures()


class UnseenCollection(CardPart):
    """The sensitivity on a collection the model never saw, per slice and per scan (any slice flagged)."""

    slices: Count = None
    slices_flagged: Count = None
    sensitivity: Number = None
    sensitivity_ci95: Interval = None
    scans: Count = None
    scans_flagged: Count = None
    scan_sensitivity: Number = None
    scan_sensitivity_ci95: Interval = None

    @property
    def slice_measure(self) -> Measure:
        """The sensitivity per slice with its interval."""
        return Measure(value=self.sensitivity, ci95=self.sensitivity_ci95)

    @property
    def scan_measure(self) -> Measure:
        """The sensitivity per scan with its interval."""
        return Measure(value=self.scan_sensitivity, ci95=self.scan_sensitivity_ci95)


# A split's collections (``all``, ``ct_ich``, ``head_ct`` ...), as the evaluation names them.
SplitMeasures = Annotated[dict[str, CollectionMeasures], absent_when_invalid(dict)]


class CardMetrics(CardPart):
    """What the model page shows of a card's ``metrics``: the validation and test splits'
    collections, and the collection the model never saw (``external_bhsd_seg``)."""

    validation: SplitMeasures = Field(default_factory=dict)
    test: SplitMeasures = Field(default_factory=dict)
    external_bhsd_seg: UnseenCollection = UnseenCollection()

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> CardMetrics:
        """The view of a card's ``metrics`` mapping (:attr:`ml.model_card.ModelCard.metrics`)."""
        return cls.model_validate(dict(metrics))
