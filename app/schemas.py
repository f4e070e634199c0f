"""Request and response models of the API (no logic)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.core.labels import Label, StudyLabel


class ModelRef(BaseModel):
    name: str
    version: str


class PredictionLinks(BaseModel):
    self: str
    original: str
    overlay: str
    heatmap: str = Field(
        description="PNG, one 8-bit channel at the input image's size: the Grad-CAM heat map."
    )
    report: str
    mask: str | None = Field(
        default=None,
        description="The segmentation's class-index mask (as segmentation.links.mask); null without one.",
    )
    contours: str | None = Field(
        default=None,
        description="The segmentation's outline image (as segmentation.links.contours); null without one.",
    )


class ImageInfo(BaseModel):
    format: Literal["png", "jpeg", "dicom"]
    width: int
    height: int


# The patient and study columns of a stored prediction or study (read from the row as attributes).
class StudyFields(BaseModel):
    patient_name: str | None = None
    patient_id: str | None = None
    study_description: str | None = None
    study_date: str | None = None
    requesting_clinician: str | None = None


class UploadForm(BaseModel):
    """The optional patient and study fields of an upload's form; they override the DICOM's."""

    patient_name: str | None = None
    patient_id: str | None = None
    study_description: str | None = None
    requesting_clinician: str | None = None


class SubtypeOut(BaseModel):
    probability: float = Field(
        ge=0.0,
        le=1.0,
        description="Probability from the segmentation model's subtype head that the slice shows it.",
    )
    area_px: int = Field(ge=0, description="Pixels outlined as this subtype, at the input image's size.")
    area_mm2: float | None = Field(
        default=None, description="The same area in mm² when the pixel spacing is known (DICOM), else null."
    )
    colour: str = Field(description="Colour of this subtype's outline in the contours image (#rrggbb).")


class SegmentationLinks(BaseModel):
    mask: str = Field(
        description="PNG, one 8-bit channel at the input image's size: the class of each pixel (0 none, "
        "1 epidural, 2 intraparenchymal, 3 intraventricular, 4 subarachnoid, 5 subdural)."
    )
    contours: str = Field(
        description="RGBA PNG at the input image's size: each subtype's outline in its colour, transparent elsewhere."
    )


class SegmentationOut(BaseModel):
    model: ModelRef
    subtypes: dict[str, SubtypeOut] = Field(description="The five subtypes by name, in class order.")
    blood_area_px: int = Field(ge=0, description="Pixels outlined as any subtype.")
    blood_area_mm2: float | None = Field(
        default=None, description="The same in mm² when the pixel spacing is known."
    )
    links: SegmentationLinks


class StudySubtypeOut(BaseModel):
    probability: float = Field(ge=0.0, le=1.0, description="The highest subtype probability over the slices.")
    area_px: int = Field(ge=0, description="Pixels outlined as this subtype, summed over the slices.")
    volume_ml: float | None = Field(
        default=None, description="Voxel-count volume in millilitres; null when spacing is unknown."
    )
    colour: str


class Abc2Out(BaseModel):
    volume_ml: float = Field(description="ABC/2 estimate of the bleed's volume in millilitres.")
    a_mm: float = Field(description="Largest diameter on the slice with the largest outlined area.")
    b_mm: float = Field(description="Largest diameter perpendicular to A on that slice.")
    c_mm: float = Field(
        description="Slices with blood (weighted 1, 0.5 or 0 by area) times the slice spacing."
    )


class StudySegmentationOut(BaseModel):
    model: ModelRef
    volume_ml: float | None = Field(
        description="Outlined blood by voxel counting: pixels x pixel spacing x slice spacing; null when "
        "the spacing is unknown (see volume_unavailable_reason)."
    )
    volume_unavailable_reason: str | None = None
    abc2: Abc2Out | None = Field(
        description="The bedside ABC/2 estimate from the same outlines, for comparison."
    )
    pixel_spacing_mm: list[float] | None = None
    slice_spacing_mm: float | None = None
    slice_spacing_source: Literal["positions", "slice_thickness"] | None = Field(
        default=None,
        description="'positions': median gap between the slices' positions; 'slice_thickness': the DICOM SliceThickness.",
    )
    blood_area_px: int = Field(ge=0, description="Pixels outlined as any subtype, summed over the slices.")
    subtypes: dict[str, StudySubtypeOut]


class ScopeOut(BaseModel):
    in_scope: bool = Field(description="Whether the image looks like a brain-window head CT slice.")
    reasons: list[str] = Field(default_factory=list, description="Why it does not, when it does not.")


class PredictionOut(BaseModel):
    id: str
    created_at: datetime
    probability: float = Field(ge=0.0, le=1.0, description="Probability of intracranial haemorrhage.")
    label: Label = Field(
        description="'out_of_scope' when the image is not a head CT slice: the probability is then "
        "no haemorrhage assessment and must not be read as one."
    )
    threshold: float = Field(
        description="The decision threshold the result was decided with; label is 'hemorrhage' at or "
        "above it. Kept as it was when the operating point changes later."
    )
    operating_point: str = Field(
        description="Which operating point decided: 'model card default', or the site operating point "
        "with where it was chosen (e.g. 'site operating point, chosen on 212 images on 2026-12-01 ...').",
    )
    scope: ScopeOut = Field(default_factory=lambda: ScopeOut(in_scope=True))
    model: ModelRef
    image: ImageInfo
    study: StudyFields
    timings_ms: dict[str, float]
    links: PredictionLinks
    segmentation: SegmentationOut | None = Field(
        default=None,
        description="Outlines of possible haemorrhage by subtype; null when no segmentation model is loaded "
        "or the request asked for none (segment=false). Like the probability, they mean nothing when the "
        "label is 'out_of_scope'.",
    )
    disclaimer: str = "Decision support only. Not for clinical use."


class PredictionPage(BaseModel):
    items: list[PredictionOut]
    total: int
    page: int
    page_size: int


class ModelOut(BaseModel):
    name: str
    version: str
    kind: Literal["classification", "segmentation", "multitask"] = "classification"
    default: bool = Field(
        description="Classification and multitask: serves requests that name no model. Segmentation: "
        "outlines every analysis by a classifier that does not outline its own slices."
    )
    threshold: float = Field(
        description="Classification and multitask: the slice decision threshold in use. Segmentation: the per-pixel "
        "blood threshold."
    )
    study_threshold: float | None = Field(
        default=None, description="Classification: the study decision threshold in use; null otherwise."
    )
    operating_point: str | None = Field(
        default=None,
        description="Where the slice threshold comes from: 'model card default', or the site operating "
        "point (file or setting) with where it was chosen.",
    )
    study_operating_point: str | None = Field(default=None, description="The same for the study threshold.")


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)


class Readiness(Health):
    models: dict[str, str | None] = Field(
        default_factory=dict,
        description="'classification': the serving model; 'segmentation': the model that outlines its "
        "slices (the same one for a multitask model); each as 'name/version', or null.",
    )


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
    segmentation: SegmentationOut | None = None


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


class StudyCriteriaOut(BaseModel):
    flagged_by: list[Literal["probability", "outline"]] = Field(
        description="The criteria that flagged the study: 'probability' (the study probability reached "
        "the threshold) and 'outline' (the outlined blood reached outline_threshold_px); empty when cleared."
    )
    outline_threshold_px: int | None = Field(
        description="The model card's outline criterion: outlined pixels of blood, summed over the "
        "slices on the model's input grid, that flag a study; null when the model's rule has none."
    )
    outline_px: int | None = Field(
        description="This study's outlined pixels on the model grid, summed over its slices; null when "
        "it was analysed without outlines."
    )


class StudyOut(BaseModel):
    id: str
    created_at: datetime
    probability: float = Field(ge=0.0, le=1.0, description="Study probability of intracranial haemorrhage.")
    label: StudyLabel
    threshold: float = Field(
        description="The study threshold; label is 'hemorrhage' at or above it, or when the outline "
        "criterion flags the study (criteria)."
    )
    operating_point: str = Field(
        description="Which operating point set the study threshold: 'model card default', or the site "
        "operating point with where it was chosen.",
    )
    aggregation: str = Field(description="How the slice probabilities became the study's (model card).")
    criteria: StudyCriteriaOut | None = Field(
        default=None,
        description="Which criteria of the study rule flagged the study; null for studies stored before "
        "the service recorded them.",
    )
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
    segmentation: StudySegmentationOut | None = Field(
        default=None,
        description="Volumes of the outlined blood (voxel count and ABC/2); null without segmentation.",
    )
    disclaimer: str = "Decision support only. Not for clinical use."


class StudySummary(BaseModel):
    id: str
    created_at: datetime
    probability: float
    label: StudyLabel
    threshold: float
    operating_point: str
    aggregation: str
    num_slices: int
    source: Literal["upload", "dicomweb"]
    model: ModelRef
    study: StudyFields
    links: StudyLinks


class JobProgress(BaseModel):
    done: int = Field(ge=0, description="Slices analysed so far.")
    total: int = Field(ge=0, description="Slices in the series.")


class StudyJobLinks(BaseModel):
    self: str
    page: str


class StudyJobOut(BaseModel):
    """A study whose analysis is queued, running or failed: how far it is, or why it failed."""

    id: str
    created_at: datetime
    status: Literal["queued", "running", "done", "failed"]
    progress: JobProgress
    failure: str | None = Field(
        None, description="Why the analysis failed, in words a person can act on; null unless failed."
    )
    links: StudyJobLinks


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
