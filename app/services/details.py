"""Typed forms of what a prediction or a study keeps in its JSON ``details`` column.

The stored JSON keeps its shape; these models say what it holds, are built when a result is
written, and are validated once when a row is read, so that the rest of the service works with
attributes instead of re-checking dictionaries. Every key has a default, so rows written before a
key existed still read, and unknown keys are kept (``extra="allow"``). A malformed entry is
dropped with a warning rather than failing the whole record: an old or hand-edited row still
shows what it can.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

logger = logging.getLogger(__name__)


class Record(BaseModel):
    """Base of the stored records: unknown keys are kept, so nothing written is lost on rewrite."""

    model_config = ConfigDict(extra="allow")

    @classmethod
    def read(cls, raw: Any) -> Self:
        """Validate a stored value, dropping (and logging) the top-level entries that do not fit."""
        values = dict(raw) if isinstance(raw, dict) else {}
        while True:
            try:
                return cls.model_validate(values)
            except ValidationError as exc:
                broken = {error["loc"][0] for error in exc.errors() if error["loc"]}
                broken &= set(values)
                if not broken:
                    raise
                logger.warning(
                    "%s: ignoring malformed stored entries %s", cls.__name__, sorted(map(str, broken))
                )
                values = {key: value for key, value in values.items() if key not in broken}

    def stored(self) -> dict[str, Any]:
        """The JSON to store: the keys that were set, in the shape the service has always written."""
        return self.model_dump(mode="json", exclude_unset=True)


class OutlineModel(Record):
    """The model that drew a slice's or a study's outlines."""

    name: str
    version: str


class ScopeRecord(Record):
    """Whether the image was judged a head CT slice (:class:`ml.data.scope.ScopeAssessment`)."""

    in_scope: bool = True
    reasons: list[str] = []

    @field_validator("reasons", mode="before")
    @classmethod
    def _text_reasons(cls, value: Any) -> list[str]:
        return [str(item) for item in value] if isinstance(value, list) else []


class SliceSubtype(Record):
    """One subtype's numbers on one outlined slice."""

    probability: float
    area_px: int
    area_mm2: float | None = None


class SliceSegmentationRecord(Record):
    """A slice's outlines in numbers: what ``segmentation.slice_record`` writes."""

    model: OutlineModel
    pixel_spacing_mm: list[float] | None = None
    subtypes: dict[str, SliceSubtype]
    blood_area_px: int
    blood_area_mm2: float | None = None


class Abc2Record(Record):
    """The bedside ABC/2 estimate of a study's outlined blood."""

    volume_ml: float
    a_mm: float
    b_mm: float
    c_mm: float


class StudySubtype(Record):
    """One subtype's numbers over a study's slices."""

    probability: float
    area_px: int
    volume_ml: float | None = None


class CompactSlice(Record):
    """One study slice's subtype probabilities and areas, in subtype order."""

    probabilities: list[float]
    area_px: list[int]


class StudySegmentationRecord(Record):
    """A study's outlines in numbers: what ``StudySegmentation.summary`` writes."""

    model: OutlineModel | None = None
    pixel_spacing_mm: list[float] | None = None
    slice_spacing_mm: float | None = None
    slice_spacing_source: Literal["positions", "slice_thickness"] | None = None
    volume_ml: float | None = None
    volume_unavailable_reason: str | None = None
    abc2: Abc2Record | None = None
    blood_area_px: int = 0
    # Outlined pixels on the model grid, summed over the slices (the study rule's outline criterion).
    grid_blood_px: int = 0
    subtypes: dict[str, StudySubtype]
    slices: list[CompactSlice] = []

    @field_validator("model", mode="before")
    @classmethod
    def _no_model(cls, value: Any) -> Any:
        # A study without any outlined slice stores ``{}`` as its model.
        return value or None


class SkippedFile(Record):
    """An uploaded object that was not analysed, and why."""

    name: str
    reason: str


class StoredSeriesRecord(Record):
    """One series stored back in the PACS."""

    kind: Literal["secondary_capture", "encapsulated_pdf", "structured_report"]
    series_instance_uid: str
    sop_instance_uids: list[str]


class PredictionDetails(Record):
    """What a slice prediction keeps besides its columns."""

    modality: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    pixel_spacing_mm: list[float] | None = None
    # Absent on rows stored before the scope check existed.
    scope: ScopeRecord | None = None
    segmentation: SliceSegmentationRecord | None = None


class StudyCriteria(Record):
    """Which of the study rule's criteria flagged a study, and the outline figures they compared."""

    flagged_by: list[Literal["probability", "outline"]] = []
    # The outline criterion: the card's threshold, and the study's own count (None when the
    # study was analysed without outlines, so the criterion could not apply).
    outline_threshold_px: int | None = None
    outline_px: int | None = None


class StudyDetails(Record):
    """What a study keeps besides its columns and its slice rows."""

    slice_threshold: float | None = None
    slice_operating_point: str | None = None
    # Absent on rows stored before key slices were kept; they are then worked out again.
    key_slices: list[int] | None = None
    ordering: str = "position"
    skipped: list[SkippedFile] = []
    other_series: list[Any] = []
    segmentation: StudySegmentationRecord | None = None
    criteria: StudyCriteria | None = None
    stored_in_pacs: list[StoredSeriesRecord] = []
    pacs_series_candidates: int | None = None
