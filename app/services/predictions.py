"""Creating, reading and deleting predictions: the database row and its files together."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import cv2
import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from app.core.errors import InvalidUpload, NotFound, StorageUnavailable
from app.core.labels import Label
from app.core.metrics import Metrics
from app.db import Database, Prediction, list_records, utcnow
from app.services.inference import (
    ModelRegistry,
    SliceResult,
    decode_upload,
    encode_png,
    labelled_overlay_png,
    run_all,
)
from app.services.segmentation import (
    CONTOURS_FILE,
    contours_png,
    mask_png,
    slice_record,
)
from app.services.storage import FileStore
from ml.data.scope import ScopeAssessment, assess_scope

logger = logging.getLogger(__name__)

LIMITATIONS_FALLBACK = [
    "Research software: not a medical device and not for clinical use.",
    "A negative result does not exclude haemorrhage.",
]


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


# Form field -> (title shown to people, maximum length); the lengths match the database columns.
FIELD_LIMITS = {
    "patient_name": ("Patient name", 200),
    "patient_id": ("Patient ID", 100),
    "study_description": ("Study description", 300),
    "requesting_clinician": ("Requesting clinician", 200),
}


def short_id(value: str) -> str:
    """A log-safe reference to an identifier: the first characters of its hash."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]


def prediction_scope(prediction: Prediction) -> tuple[bool, list[str]]:
    """Whether a stored prediction's image was judged a head CT slice, and why not.

    Rows stored before the scope check existed count as in scope.
    """
    scope = (prediction.details or {}).get("scope")
    if not isinstance(scope, dict):
        return prediction.label != Label.OUT_OF_SCOPE, []
    reasons = scope.get("reasons")
    listed = [str(item) for item in reasons] if isinstance(reasons, list) else []
    return bool(scope.get("in_scope", True)), listed


def _first(*values: Any) -> str | None:
    for value in values:
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


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


class PredictionService:
    """The one place that writes predictions; routes and pages call it."""

    def __init__(
        self,
        database: Database,
        files: FileStore,
        registry: ModelRegistry,
        max_pixels: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.database = database
        self.files = files
        self.registry = registry
        self.max_pixels = max_pixels
        self.metrics = metrics

    def analyse(
        self,
        data: bytes,
        model_name: str | None = None,
        model_version: str | None = None,
        segment: bool = True,
    ) -> SliceResult:
        """Decode and classify (and outline, when the model outlines itself or a segmentation model
        is loaded) without storing anything."""
        started = time.perf_counter()
        decoded = decode_upload(data, self.max_pixels)
        decode_ms = (time.perf_counter() - started) * 1000.0
        classifier = self.registry.get(model_name, model_version)
        result = classifier.predict(decoded, self.registry.segmenter(), segment)
        result.timings_ms = {"decode": decode_ms, **result.timings_ms}
        if self.metrics is not None:
            seconds = result.timings_ms.get("model_and_gradcam", 0.0) / 1000.0
            self.metrics.observe_inference(result.model_name, result.model_version, seconds)
        return result

    def _finish(self, result: SliceResult) -> tuple[ScopeAssessment, dict[str, bytes], dict[str, Any]]:
        """Scope check, the files to store and the segmentation record of an analysed slice."""
        metadata = result.decoded.metadata
        timings: dict[str, float] = {}

        def timed(name: str, job: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                started = time.perf_counter()
                value = job()
                timings[name] = (time.perf_counter() - started) * 1000.0
                return value

            return run

        def check_scope() -> ScopeAssessment:
            colourfulness, modality = metadata.get("colourfulness"), metadata.get("modality")
            return assess_scope(result.decoded.pixels, colourfulness, modality, mask=result.head_mask)

        # The scope check and the PNGs are independent: they run side by side on the CPU's cores.
        # Their stage timings are what each took; together they took about the longest of them.
        encoders = slice_image_jobs(result, heatmap=True)
        started = time.perf_counter()
        outcomes = run_all(
            [timed("scope_check", check_scope), *(timed(kind, job) for kind, job in encoders.items())]
        )
        together_ms = (time.perf_counter() - started) * 1000.0
        scope: ScopeAssessment = outcomes[0]
        files = {f"{kind}.png": data for kind, data in zip(encoders, outcomes[1:], strict=True)}
        result.timings_ms["scope_check"] = timings["scope_check"]
        result.timings_ms["encode"] = sum(timings[kind] for kind in encoders)
        result.timings_ms["scope_check_and_encode"] = together_ms
        segmentation: dict[str, Any] = {}
        if result.segmentation is not None:
            segmentation["segmentation"] = slice_record(result.segmentation, metadata.get("pixel_spacing_mm"))
        return scope, files, segmentation

    def warm_up(self) -> None:
        """Take one synthetic head slice through the whole analysis, storing nothing, so that the
        first real request does not pay for one-time set-up (code paths, buffers, fonts)."""
        if not self.registry.ready:
            return
        image = np.zeros((512, 512), np.uint8)
        cv2.ellipse(image, (256, 256), (190, 225), 0, 0, 360, 100, -1)
        cv2.ellipse(image, (256, 256), (190, 225), 0, 0, 360, 255, 10)
        ok, png = cv2.imencode(".png", image)
        if not ok:
            return
        decoded = decode_upload(png.tobytes(), self.max_pixels)
        self._finish(self.registry.get().predict(decoded, self.registry.segmenter()))

    def create(
        self,
        data: bytes,
        fields: UploadFields,
        model_name: str | None = None,
        model_version: str | None = None,
        segment: bool = True,
    ) -> Prediction:
        """Analyse one slice and store it: files first, then the row, all or nothing.

        An image that is not a head CT slice (:func:`ml.data.scope.assess_scope`) is stored too,
        so that whoever sent it sees what happened, but labelled ``out_of_scope``. With
        ``segment`` and a segmentation model loaded, the outlines (``mask.png``,
        ``contours.png``) and their numbers (``details["segmentation"]``) are stored as well.
        """
        total_started = time.perf_counter()
        result = self.analyse(data, model_name, model_version, segment)
        metadata = result.decoded.metadata
        scope, files, segmentation = self._finish(result)
        prediction_id = str(uuid.uuid4())
        prediction = Prediction(
            id=prediction_id,
            created_at=utcnow(),
            model_name=result.model_name,
            model_version=result.model_version,
            probability=result.probability,
            label=result.label if scope.in_scope else Label.OUT_OF_SCOPE,
            threshold=result.threshold,
            operating_point=result.operating_point,
            source_format=result.decoded.format,
            image_width=result.width,
            image_height=result.height,
            patient_name=_first(fields.patient_name, metadata.get("patient_name")),
            patient_id=_first(fields.patient_id, metadata.get("patient_id")),
            study_description=_first(fields.study_description, metadata.get("study_description")),
            study_date=_first(metadata.get("study_date")),
            requesting_clinician=_first(fields.requesting_clinician),
            details={
                **{
                    key: metadata.get(key)
                    for key in (
                        "modality",
                        "study_instance_uid",
                        "series_instance_uid",
                        "sop_instance_uid",
                        "pixel_spacing_mm",
                    )
                    if metadata.get(key) is not None
                },
                "scope": scope.to_dict(),
                **segmentation,
            },
        )
        started = time.perf_counter()
        self.files.save_prediction(prediction_id, files)
        try:
            result.timings_ms["storage"] = (time.perf_counter() - started) * 1000.0
            result.timings_ms["total"] = (time.perf_counter() - total_started) * 1000.0
            prediction.timings_ms = {key: round(value, 2) for key, value in result.timings_ms.items()}
            with self.database.session() as session:
                session.add(prediction)
        except SQLAlchemyError as exc:
            self.files.delete(prediction_id)
            logger.error("Could not store the prediction row: %s", type(exc).__name__)
            raise StorageUnavailable(
                "The result could not be saved because the database is not reachable; nothing was "
                "saved. Try again, or ask the administrator to check the database."
            ) from exc
        except BaseException:
            self.files.delete(prediction_id)
            raise
        if self.metrics is not None:
            self.metrics.count_prediction(prediction.label, prediction.model_name, prediction.model_version)
        logger.info(
            "prediction %s stored: label=%s model=%s/%s",
            prediction_id,
            prediction.label,
            prediction.model_name,
            prediction.model_version,
        )
        return prediction

    def get(self, prediction_id: str) -> Prediction:
        with self.database.session() as session:
            prediction = session.get(Prediction, prediction_id)
        if prediction is None:
            raise NotFound(f"No prediction with id {prediction_id}.")
        return prediction

    def list(
        self,
        page: int = 1,
        page_size: int = 20,
        label: str | None = None,
        patient_id: str | None = None,
        positives_first: bool = False,
    ) -> tuple[list[Prediction], int]:
        return list_records(self.database, Prediction, page, page_size, label, patient_id, positives_first)

    def delete(self, prediction_id: str) -> None:
        with self.database.session() as session:
            prediction = session.get(Prediction, prediction_id)
            if prediction is None:
                raise NotFound(f"No prediction with id {prediction_id}.")
            session.delete(prediction)
        self.files.delete(prediction_id)

    def read_file(self, prediction_id: str, name: str) -> bytes:
        prediction = self.get(prediction_id)
        if name == "report.pdf" and not self.files.exists(prediction_id, name):
            self.files.write(prediction_id, name, self.render_report(prediction))
        return self.files.read(prediction_id, name)

    def render_report(self, prediction: Prediction) -> bytes:
        from app.services.reporting import (
            ReportModelInfo,
            SliceReport,
            render_slice_report,
            slice_report_section,
        )

        card = self.registry.loaded_card(prediction.model_name, prediction.model_version)
        _, reasons = prediction_scope(prediction)
        original_png = self.files.read(prediction.id, "original.png")
        segmentation = (prediction.details or {}).get("segmentation")
        section = None
        # Outlines on an image that is not a head CT slice mean nothing, as its probability does.
        in_scope = prediction.label != Label.OUT_OF_SCOPE
        if in_scope and isinstance(segmentation, dict) and self.files.exists(prediction.id, CONTOURS_FILE):
            section = slice_report_section(
                segmentation,
                self.registry.outline_card(segmentation),
                original_png,
                self.files.read(prediction.id, CONTOURS_FILE),
            )
        report = SliceReport(
            report_id=prediction.id,
            created_at=prediction.created_at,
            probability=prediction.probability,
            label=prediction.label,
            threshold=prediction.threshold,
            operating_point=prediction.operating_point,
            original_png=original_png,
            overlay_png=self.files.read(prediction.id, "overlay.png"),
            model=ReportModelInfo(
                name=prediction.model_name, version=prediction.model_version, metrics=card_metrics(card)
            ),
            limitations=list(card.get("limitations", LIMITATIONS_FALLBACK)) if card else LIMITATIONS_FALLBACK,
            patient_name=prediction.patient_name,
            patient_id=prediction.patient_id,
            study_description=prediction.study_description,
            study_date=prediction.study_date,
            requesting_clinician=prediction.requesting_clinician,
            source_format=prediction.source_format,
            extra_findings=reasons,
            segmentation=section,
        )
        return render_slice_report(report)


DATASET_TITLES = {"ct_ich": "CT-ICH", "head_ct": "head_ct", "all": "all test images"}


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
