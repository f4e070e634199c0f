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


class PredictionOut(BaseModel):
    id: str
    created_at: datetime
    probability: float = Field(ge=0.0, le=1.0, description="Probability of intracranial haemorrhage.")
    label: Literal["hemorrhage", "no_hemorrhage"]
    threshold: float = Field(
        description="The model's decision threshold; label is 'hemorrhage' at or above it."
    )
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
