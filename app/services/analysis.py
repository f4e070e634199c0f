"""The analysis pipeline that a slice and a study both go through.

decode -> scope -> model -> images -> storage -> record: :class:`AnalysisPipeline` holds the
stages that do not depend on whether one slice or a whole series was sent (decoding, the model
pass with its metrics, the scope check, the PNGs of each analysed slice), and the helpers here
build what both kinds of record share (the patient fields, the report's model and limitations).
:mod:`app.services.predictions` and :mod:`app.services.studies` add only what is their own.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidUpload
from app.core.metrics import Metrics
from app.db import Prediction, Study, utcnow
from app.services.imaging import decode_upload, encode_png, labelled_overlay_png
from app.services.inference import SliceClassifier, SliceResult
from app.services.parallel import run_all
from app.services.registry import ModelRegistry
from app.services.segmentation import contours_png, mask_png
from ml.data.imaging import DecodedImage
from ml.data.scope import ScopeAssessment, assess_scope

if TYPE_CHECKING:
    from app.services.reporting import ReportModelInfo

LIMITATIONS_FALLBACK = [
    "Research software: not a medical device and not for clinical use.",
    "A negative result does not exclude haemorrhage.",
]
DATASET_TITLES = {"ct_ich": "CT-ICH", "head_ct": "head_ct", "all": "all test images"}

# Form field -> (title shown to people, maximum length); the lengths match the database columns.
FIELD_LIMITS = {
    "patient_name": ("Patient name", 200),
    "patient_id": ("Patient ID", 100),
    "study_description": ("Study description", 300),
    "requesting_clinician": ("Requesting clinician", 200),
}


@dataclass(frozen=True)
class UploadFields:
    """Optional patient and study fields sent with an upload (they override DICOM's)."""

    patient_name: str | None = None
    patient_id: str | None = None
    study_description: str | None = None
    requesting_clinician: str | None = None

    @classmethod
    def from_form(
        cls,
        patient_name: str | None = None,
        patient_id: str | None = None,
        study_description: str | None = None,
        requesting_clinician: str | None = None,
    ) -> UploadFields:
        """Strip the fields, treat blanks as absent, and refuse values over their limits."""
        values = {
            "patient_name": patient_name,
            "patient_id": patient_id,
            "study_description": study_description,
            "requesting_clinician": requesting_clinician,
        }
        cleaned: dict[str, str | None] = {}
        for name, value in values.items():
            text = (value or "").strip()
            title, limit = FIELD_LIMITS[name]
            if len(text) > limit:
                raise InvalidUpload(
                    f"{title} is longer than {limit} characters; shorten it and upload again."
                )
            cleaned[name] = text or None
        return cls(**cleaned)


def short_id(value: str) -> str:
    """A log-safe reference to an identifier: the first characters of its hash."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]


def first_of(*values: Any) -> str | None:
    """The first value that is not blank, stripped; None when all are."""
    for value in values:
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def patient_columns(fields: UploadFields, metadata: dict[str, Any]) -> dict[str, str | None]:
    """The patient and study columns of a new record: the upload's fields, else the DICOM's."""
    return {
        "patient_name": first_of(fields.patient_name, metadata.get("patient_name")),
        "patient_id": first_of(fields.patient_id, metadata.get("patient_id")),
        "study_description": first_of(fields.study_description, metadata.get("study_description")),
        "study_date": first_of(metadata.get("study_date")),
        "requesting_clinician": first_of(fields.requesting_clinician),
    }


def new_record_columns(classifier_name: str, classifier_version: str) -> dict[str, Any]:
    """The identity of a new record: a fresh id, the time and the model that decided it."""
    return {
        "id": str(uuid.uuid4()),
        "created_at": utcnow(),
        "model_name": classifier_name,
        "model_version": classifier_version,
    }


class StageTimings:
    """Milliseconds spent in each stage of one analysis, in the order they were measured."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.perf_counter() if started is None else started
        self.stages: dict[str, float] = {}

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, (time.perf_counter() - started) * 1000.0)

    def add(self, stage: str, milliseconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + milliseconds

    def finish(self) -> dict[str, float]:
        """The stages and ``total`` (since ``started``), rounded as they are stored."""
        self.stages["total"] = (time.perf_counter() - self.started) * 1000.0
        return {key: round(value, 2) for key, value in self.stages.items()}


def slice_image_jobs(result: SliceResult, heatmap: bool) -> dict[str, Callable[[], bytes]]:
    """How to encode each PNG stored for an analysed slice, by kind: ``original``, ``overlay``
    (labelled with its model), ``heatmap`` when asked, and ``mask`` and ``contours`` when it was
    outlined. The jobs are independent, so a caller can run them side by side (:func:`run_all`)."""
    jobs: dict[str, Callable[[], bytes]] = {
        "original": partial(encode_png, result.decoded.pixels),
        "overlay": partial(labelled_overlay_png, result.overlay, result.model_name, result.model_version),
    }
    if heatmap:
        jobs["heatmap"] = lambda: encode_png((result.heatmap * 255.0).round().astype("uint8"))
    if result.segmentation is not None:
        jobs["mask"] = partial(mask_png, result.segmentation)
        jobs["contours"] = partial(contours_png, result.segmentation)
    return jobs


@dataclass
class SliceImages:
    """The scope check and the stored PNGs of one analysed slice."""

    scope: ScopeAssessment
    files: dict[str, bytes]


class AnalysisPipeline:
    """The stages of an analysis shared by slices and studies: decode, model, scope, images.

    Args:
        registry: the loaded models.
        max_pixels: the largest image accepted.
        metrics: where model time is counted; None counts nothing (the warm-up, tests).
    """

    def __init__(self, registry: ModelRegistry, max_pixels: int, metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.max_pixels = max_pixels
        self.metrics = metrics

    def decode(self, data: bytes) -> tuple[DecodedImage, float]:
        """Decode one uploaded image; also how many milliseconds it took."""
        started = time.perf_counter()
        decoded = decode_upload(data, self.max_pixels)
        return decoded, (time.perf_counter() - started) * 1000.0

    def classify(
        self, classifier: SliceClassifier, decoded: DecodedImage, segment: bool = True
    ) -> SliceResult:
        """Classify one slice (and outline it, when the model or a segmentation model does)."""
        return classifier.predict(decoded, self.registry.segmenter(), segment)

    def classify_batch(
        self, classifier: SliceClassifier, images: Sequence[DecodedImage], segment: bool = True
    ) -> list[SliceResult]:
        """Classify (and outline) several slices of one series in one batched pass."""
        return classifier.predict_many(list(images), self.registry.segmenter(), segment)

    def count_inference(self, model_name: str, model_version: str, milliseconds: float) -> None:
        """Count one model inference of an analysis (a slice or a whole series) in the metrics."""
        if self.metrics is not None:
            self.metrics.observe_inference(model_name, model_version, milliseconds / 1000.0)

    @staticmethod
    def slice_images(result: SliceResult, timings: dict[str, float]) -> SliceImages:
        """The scope check and the PNGs of one slice, side by side on the CPU's cores.

        ``timings`` receives ``scope_check``, ``encode`` (what each took) and
        ``scope_check_and_encode`` (together: about the longest of them).
        """
        metadata = result.decoded.metadata
        spent: dict[str, float] = {}

        def timed(name: str, job: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                started = time.perf_counter()
                value = job()
                spent[name] = (time.perf_counter() - started) * 1000.0
                return value

            return run

        def check_scope() -> ScopeAssessment:
            colourfulness, modality = metadata.get("colourfulness"), metadata.get("modality")
            return assess_scope(result.decoded.pixels, colourfulness, modality, mask=result.head_mask)

        encoders = slice_image_jobs(result, heatmap=True)
        started = time.perf_counter()
        outcomes = run_all(
            [timed("scope_check", check_scope), *(timed(kind, job) for kind, job in encoders.items())]
        )
        timings["scope_check"] = spent["scope_check"]
        timings["encode"] = sum(spent[kind] for kind in encoders)
        timings["scope_check_and_encode"] = (time.perf_counter() - started) * 1000.0
        files = {f"{kind}.png": data for kind, data in zip(encoders, outcomes[1:], strict=True)}
        return SliceImages(scope=outcomes[0], files=files)


def card_metrics(card: dict[str, Any]) -> dict[str, str]:
    """Headline test metrics of a model card as label -> "value (95% CI low-high)"."""
    summary: dict[str, str] = {}
    test = card.get("metrics", {}).get("test", {})
    for dataset in ("ct_ich", "head_ct"):
        entry = test.get(dataset)
        if not entry:
            continue
        title = DATASET_TITLES[dataset]
        for level in ("slice", "patient"):
            metrics = entry.get(level, {}).get("metrics", {})
            for metric in ("auc", "sensitivity", "specificity"):
                value = metrics.get(metric)
                if not value or value.get("value") is None:
                    continue
                low, high = value.get("ci95", [None, None])
                interval = f" (95% CI {low:.2f}-{high:.2f})" if low is not None and high is not None else ""
                summary[f"Test {metric.upper() if metric == 'auc' else metric}, {title} {level}s"] = (
                    f"{value['value']:.2f}{interval}"
                )
    return summary


def report_preamble(registry: ModelRegistry, record: Prediction | Study) -> dict[str, Any]:
    """What every PDF report starts with: the result, its model with the card's headline metrics
    and limitations, and the patient and study fields."""
    from app.services.reporting import ReportModelInfo

    card = registry.loaded_card(record.model_name, record.model_version)
    model: ReportModelInfo = ReportModelInfo(
        name=record.model_name, version=record.model_version, metrics=card_metrics(card)
    )
    return {
        "report_id": record.id,
        "created_at": record.created_at,
        "probability": record.probability,
        "label": record.label,
        "threshold": record.threshold,
        "operating_point": record.operating_point,
        "model": model,
        "limitations": list(card.get("limitations", LIMITATIONS_FALLBACK)) if card else LIMITATIONS_FALLBACK,
        "patient_name": record.patient_name,
        "patient_id": record.patient_id,
        "study_description": record.study_description,
        "study_date": record.study_date,
        "requesting_clinician": record.requesting_clinician,
    }
