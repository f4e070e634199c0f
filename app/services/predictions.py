"""Slice predictions: one image through the analysis pipeline, stored as a row and its files."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
from sqlalchemy.orm import Session

from app.core.labels import Label
from app.core.metrics import Metrics
from app.db import Database, Prediction
from app.services.analysis import (
    AnalysisPipeline,
    SliceImages,
    StageTimings,
    UploadFields,
    new_record_columns,
    patient_columns,
    report_preamble,
)
from app.services.details import PredictionDetails, ScopeRecord, SliceSegmentationRecord
from app.services.inference import SliceResult
from app.services.records import Records
from app.services.registry import ModelRegistry
from app.services.segmentation import CONTOURS_FILE, slice_record
from app.services.storage import PREDICTIONS, FileStore
from ml.data.scope import ScopeAssessment

__all__ = ["PredictionService", "UploadFields", "prediction_details", "prediction_scope"]

logger = logging.getLogger(__name__)

# DICOM values a prediction keeps in its details when the upload had them.
METADATA_DETAILS = (
    "modality",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "pixel_spacing_mm",
)


def prediction_details(prediction: Prediction) -> PredictionDetails:
    """The typed details of a stored prediction."""
    return PredictionDetails.read(prediction.details)


def prediction_scope(
    prediction: Prediction, details: PredictionDetails | None = None
) -> tuple[bool, list[str]]:
    """Whether a stored prediction's image was judged a head CT slice, and why not.

    Rows stored before the scope check existed count as in scope. ``details``: the prediction's
    details when the caller has read them already.
    """
    scope = (details or prediction_details(prediction)).scope
    if scope is None:
        return prediction.label != Label.OUT_OF_SCOPE, []
    return scope.in_scope, list(scope.reasons)


def new_details(result: SliceResult, scope: ScopeAssessment) -> PredictionDetails:
    """The details of a new prediction: DICOM identifiers, the scope check and the outlines."""
    metadata = result.decoded.metadata
    details = PredictionDetails.model_validate(
        {key: metadata[key] for key in METADATA_DETAILS if metadata.get(key) is not None}
    )
    details.scope = ScopeRecord.model_validate(scope.to_dict())
    if result.segmentation is not None:
        details.segmentation = SliceSegmentationRecord.model_validate(
            slice_record(result.segmentation, metadata.get("pixel_spacing_mm"))
        )
    return details


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
        self.files = files
        self.registry = registry
        self.max_pixels = max_pixels
        self.metrics = metrics
        self.pipeline = AnalysisPipeline(registry, max_pixels, metrics)
        self.records: Records[Prediction] = Records(database, files, Prediction, PREDICTIONS)
        # Reading, listing and deleting are the records layer's own operations.
        self.get = self.records.get
        self.list = self.records.list
        self.delete = self.records.delete

    def analyse(
        self,
        data: bytes,
        model_name: str | None = None,
        model_version: str | None = None,
        segment: bool = True,
    ) -> SliceResult:
        """Decode and classify (and outline, when the model outlines itself or a segmentation model
        is loaded) without storing anything."""
        decoded, decode_ms = self.pipeline.decode(data)
        classifier = self.registry.get(model_name, model_version)
        result = self.pipeline.classify(classifier, decoded, segment)
        result.timings_ms = {"decode": decode_ms, **result.timings_ms}
        self.pipeline.count_inference(
            result.model_name, result.model_version, result.timings_ms.get("model_and_gradcam", 0.0)
        )
        return result

    def _finish(self, result: SliceResult) -> tuple[ScopeAssessment, dict[str, bytes], PredictionDetails]:
        """The scope and images stages of an analysed slice: its scope check, the files to store
        and the details to keep."""
        images: SliceImages = self.pipeline.slice_images(result, result.timings_ms)
        return images.scope, images.files, new_details(result, images.scope)

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
        decoded, _ = self.pipeline.decode(png.tobytes())
        # Not through analyse(): the warm-up is no inference to count.
        self._finish(self.pipeline.classify(self.registry.get(), decoded))

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
        timings = StageTimings()
        result = self.analyse(data, model_name, model_version, segment)
        scope, files, details = self._finish(result)
        prediction = Prediction(
            **new_record_columns(result.model_name, result.model_version),
            probability=result.probability,
            label=result.label if scope.in_scope else Label.OUT_OF_SCOPE,
            threshold=result.threshold,
            operating_point=result.operating_point,
            source_format=result.decoded.format,
            image_width=result.width,
            image_height=result.height,
            **patient_columns(fields, result.decoded.metadata),
            details=details.stored(),
        )
        timings.stages.update(result.timings_ms)
        storage_started = time.perf_counter()

        def add_row(session: Session) -> None:
            timings.add("storage", (time.perf_counter() - storage_started) * 1000.0)
            prediction.timings_ms = timings.finish()
            session.add(prediction)

        self.records.store(prediction.id, files, add_row)
        if self.metrics is not None:
            self.metrics.count_prediction(prediction.label, prediction.model_name, prediction.model_version)
        logger.info(
            "prediction %s stored: label=%s model=%s/%s",
            prediction.id,
            prediction.label,
            prediction.model_name,
            prediction.model_version,
        )
        return prediction

    def read_file(self, prediction_id: str, name: str) -> bytes:
        """A stored file of a prediction; the PDF report is rendered on first request."""
        if name != "report.pdf":
            return self.records.read_file(prediction_id, name)
        prediction = self.get(prediction_id)
        return self.records.cached_file(prediction_id, name, lambda: self.render_report(prediction))

    def render_report(self, prediction: Prediction) -> bytes:
        """The PDF report of one slice: the finding, the overlay, the outlines and the model."""
        from app.services.reporting import SliceReport, render_slice_report, slice_report_section

        details = prediction_details(prediction)
        _, reasons = prediction_scope(prediction, details)
        original_png = self.files.read(prediction.id, "original.png")
        section = None
        # Outlines on an image that is not a head CT slice mean nothing, as its probability does.
        in_scope = prediction.label != Label.OUT_OF_SCOPE
        if in_scope and details.segmentation is not None and self.files.exists(prediction.id, CONTOURS_FILE):
            section = slice_report_section(
                details.segmentation,
                self.registry.outline_card(details.segmentation),
                original_png,
                self.files.read(prediction.id, CONTOURS_FILE),
            )
        report = SliceReport(
            **report_preamble(self.registry, prediction),
            original_png=original_png,
            overlay_png=self.files.read(prediction.id, "overlay.png"),
            source_format=prediction.source_format,
            extra_findings=reasons,
            segmentation=section,
        )
        return render_slice_report(report)
