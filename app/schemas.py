"""Request and response models of the API (no logic)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    name: str
    version: str


class PredictionLinks(BaseModel):
    self: str
    original: str
    overlay: str
    heatmap: str
    report: str


class ImageInfo(BaseModel):
    format: Literal["png", "jpeg", "dicom"]
    width: int
    height: int


class StudyFields(BaseModel):
    patient_name: str | None = None
    patient_id: str | None = None
    study_description: str | None = None
    study_date: str | None = None
    requesting_clinician: str | None = None


class ScopeOut(BaseModel):
    in_scope: bool = Field(description="Whether the image looks like a brain-window head CT slice.")
    reasons: list[str] = Field(default_factory=list, description="Why it does not, when it does not.")


class PredictionOut(BaseModel):
    id: str
    created_at: datetime
    probability: float = Field(ge=0.0, le=1.0, description="Probability of intracranial haemorrhage.")
    label: Literal["hemorrhage", "no_hemorrhage", "out_of_scope"] = Field(
        description="'out_of_scope' when the image is not a head CT slice: the probability is then "
        "no haemorrhage assessment and must not be read as one."
    )
    threshold: float = Field(
        description="The model's decision threshold; label is 'hemorrhage' at or above it."
    )
    scope: ScopeOut = Field(default_factory=lambda: ScopeOut(in_scope=True))
    model: ModelRef
    image: ImageInfo
    study: StudyFields
    timings_ms: dict[str, float]
    links: PredictionLinks
    disclaimer: str = "Decision support only. Not for clinical use."


class PredictionPage(BaseModel):
    items: list[PredictionOut]
    total: int
    page: int
    page_size: int


class ModelOut(BaseModel):
    name: str
    version: str
    default: bool
    threshold: float


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)


class StudySliceLinks(BaseModel):
    image: str
    overlay: str


class StudySliceOut(BaseModel):
    index: int = Field(description="Position in anatomical order, from 0 (lowest along the slice normal).")
    sop_instance_uid: str | None
    position_mm: float | None = Field(description="Position along the slice normal, in millimetres.")
    probability: float = Field(ge=0.0, le=1.0)
    key: bool = Field(description="One of the most probable slices, shown in the report.")
    links: StudySliceLinks


class SkippedOut(BaseModel):
    name: str
    reason: str


class StudyLinks(BaseModel):
    self: str
    report: str
    page: str


class StoredObject(BaseModel):
    kind: Literal["secondary_capture", "encapsulated_pdf", "structured_report"]
    series_instance_uid: str
    sop_instance_uids: list[str]


class StudyOut(BaseModel):
    id: str
    created_at: datetime
    probability: float = Field(ge=0.0, le=1.0, description="Study probability of intracranial haemorrhage.")
    label: Literal["hemorrhage", "no_hemorrhage"]
    threshold: float = Field(description="The study threshold; label is 'hemorrhage' at or above it.")
    aggregation: str = Field(description="How the slice probabilities became the study's (model card).")
    num_slices: int
    source: Literal["upload", "dicomweb"]
    study_instance_uid: str | None
    series_instance_uid: str | None
    ordering: str = Field(description="'position' (along the slice normal) or 'instance_number'.")
    model: ModelRef
    study: StudyFields
    key_slices: list[int]
    slices: list[StudySliceOut]
    skipped: list[SkippedOut]
    stored_in_pacs: list[StoredObject] = Field(default_factory=list)
    timings_ms: dict[str, float]
    links: StudyLinks
    disclaimer: str = "Decision support only. Not for clinical use."


class StudySummary(BaseModel):
    id: str
    created_at: datetime
    probability: float
    label: Literal["hemorrhage", "no_hemorrhage"]
    threshold: float
    aggregation: str
    num_slices: int
    source: Literal["upload", "dicomweb"]
    model: ModelRef
    study: StudyFields
    links: StudyLinks


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    page: int
    page_size: int


class DicomwebRequest(BaseModel):
    study_instance_uid: str = Field(
        min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$", description="The study in the PACS."
    )
    model: str | None = None
    model_version: str | None = None
