"""Whole CT studies: a series of DICOM slices in, per-slice probabilities and one study decision out.

The slices are read and ordered by :func:`ml.data.series.assemble_series`, classified in
batches through the same compiled forward and Grad-CAM pass as single slices, and combined
into one study probability with the aggregation named in the model card
(``study_aggregation``, default ``max``) against ``study_threshold`` (default: the slice
threshold). The windowed slice and its overlay are stored for every slice, so a reader can
scroll through the whole series. When a segmentation model is loaded, every slice is outlined in
the same batched pass, and the outlines give the study a volume of blood (voxel counting and the
bedside ABC/2 estimate). What a stored study is and how its decision is made are in
:mod:`app.services.study_record`; this module runs the analysis and stores it.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from app.core.errors import InvalidStudy, InvalidUpload, NotFound, UnsupportedImage, UploadTooLarge
from app.core.labels import Label
from app.core.metrics import Metrics
from app.db import JOB_DONE, PENDING_LABEL, AnalysisClaim, Database, Study, StudySlice
from app.services.analysis import (
    AnalysisPipeline,
    StageTimings,
    UploadFields,
    new_record_columns,
    patient_columns,
    short_id,
    slice_image_jobs,
)
from app.services.details import SkippedFile, StudyDetails, StudySegmentationRecord
from app.services.inference import SliceClassifier, SliceResult
from app.services.parallel import run_all
from app.services.records import Records
from app.services.registry import ModelRegistry
from app.services.segmentation import StudySegmentation
from app.services.storage import JOB_INPUTS, STUDIES, FileStore
from app.services.study_record import StudyDecision, StudyRecord, key_slice_indices, slice_file, slice_rows
from ml.data.imaging import UnsupportedImageError
from ml.data.series import (
    ArchiveError,
    ArchiveLimits,
    ArchiveTooLarge,
    SeriesError,
    StudySeries,
    assemble_series,
    extract_zip,
    is_zip,
)
from ml.evaluation.study import aggregate

if TYPE_CHECKING:
    from app.services.claims import Claim

logger = logging.getLogger(__name__)

# Slices per forward pass: large enough to use the batched graph, small enough that a
# 300-slice study never holds more than one batch of heat maps and overlays in memory.
BATCH_SIZE = 16
SOURCES = ("upload", "dicomweb")


class JobAttempt(Protocol):
    """The attempt at a study job that an analysis belongs to (``app.services.jobs.attempts.JobRun``)."""

    study_id: str

    def progress(self, done: int, total: int) -> None:
        """Record how many slices are analysed; raises when the job is no longer this attempt's."""

    def finish(self, session: Session, study: Study) -> None:
        """Store the finished study in place of the job's row, inside the transaction of its slices."""


@dataclass
class SeriesAnalysis:
    """The model and images stages over every slice of one series: probabilities, encoded images,
    outlines and the time each stage took."""

    probabilities: list[float] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    model_ms: float = 0.0
    encode_ms: float = 0.0
    segmentation: StudySegmentation | None = None
    segmentation_ms: float = 0.0

    def add_batch(self, start: int, results: list[SliceResult], elapsed_ms: float) -> None:
        """Keep one batch's results (its first slice is slice ``start``; the batch's model pass
        took ``elapsed_ms``, outlines included) and encode its images side by side."""
        segmentation_ms = sum(result.timings_ms.get("segmentation", 0.0) for result in results)
        self.model_ms += elapsed_ms - segmentation_ms
        self.segmentation_ms += segmentation_ms
        started = time.perf_counter()
        names: list[str] = []
        jobs: list[Callable[[], bytes]] = []
        for offset, result in enumerate(results):
            self.probabilities.append(result.probability)
            for kind, job in slice_image_jobs(result, heatmap=False).items():
                # The slice itself is stored as slice_NNN.png.
                names.append(slice_file("slice" if kind == "original" else kind, start + offset))
                jobs.append(job)
            if self.segmentation is not None and result.segmentation is not None:
                self.segmentation.add(result.segmentation)
        self.files.update(zip(names, run_all(jobs), strict=True))
        self.encode_ms += (time.perf_counter() - started) * 1000.0

    def add_timings(self, timings: StageTimings) -> None:
        """The time of the model, images and outline stages, added to an analysis's timings."""
        timings.add("model_and_gradcam", self.model_ms)
        timings.add("encode", self.encode_ms)
        if self.segmentation is not None:
            timings.add("segmentation", self.segmentation_ms)


def series_objects(uploads: Sequence[tuple[str, bytes]], limits: ArchiveLimits) -> list[tuple[str, bytes]]:
    """The uploaded objects with each ZIP unpacked into its entries (named ``zip/entry``).

    Raises:
        InvalidUpload: a damaged or unsafe ZIP.
        UploadTooLarge: a ZIP over the entry or size limits.
    """
    objects: list[tuple[str, bytes]] = []
    for name, data in uploads:
        if not is_zip(data):
            objects.append((name, data))
            continue
        try:
            entries = extract_zip(data, limits)
        except ArchiveTooLarge as exc:
            raise UploadTooLarge(f"{name}: {exc}") from exc
        except ArchiveError as exc:
            raise InvalidUpload(f"{name}: {exc}") from exc
        objects.extend((f"{name}/{entry}", content) for entry, content in entries)
    return objects


class StudyService:
    """The one place that writes studies; the API, the pages and the PACS integration call it."""

    def __init__(
        self,
        database: Database,
        files: FileStore,
        registry: ModelRegistry,
        max_pixels: int,
        max_slices: int = 1000,
        archive_limits: ArchiveLimits | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.files = files
        self.registry = registry
        self.max_pixels = max_pixels
        self.max_slices = max_slices
        self.archive_limits = archive_limits or ArchiveLimits()
        self.pipeline = AnalysisPipeline(registry, max_pixels, metrics)
        # A study's slices and its PACS claim go with it, so that the PACS study may be analysed again.
        self.records: Records[Study] = Records(
            database, files, Study, STUDIES, dependents=(StudySlice, AnalysisClaim)
        )
        # Adding to the details (what was stored back to the PACS) is the records layer's own operation.
        self.update_details = self.records.update_details

    def list(
        self,
        page: int = 1,
        page_size: int = 20,
        label: str | None = None,
        patient_id: str | None = None,
        positives_first: bool = False,
    ) -> tuple[list[Study], int]:
        """One page of finished studies, newest first (haemorrhage first on request), and the total."""
        return self.records.list(
            page, page_size, label, patient_id, positives_first, conditions=(Study.status == JOB_DONE,)
        )

    def list_unfinished(self, patient_id: str | None = None, limit: int = 50) -> builtins.list[Study]:
        """Studies whose job is queued, running or failed, newest first (the worklist shows them apart)."""
        return self.records.list(1, limit, None, patient_id, False, conditions=(Study.status != JOB_DONE,))[0]

    def delete(self, study_id: str) -> None:
        """Delete a study, its slices and its files, and the inputs of its job if it has not finished."""
        self.records.delete(study_id)
        self.files.delete(study_id, JOB_INPUTS)

    def read_series(self, uploads: Sequence[tuple[str, bytes]]) -> StudySeries:
        """Unpack ZIPs, parse the DICOM objects and return the chosen series, ordered.

        Raises:
            InvalidUpload: no files, or a damaged or unsafe ZIP.
            UploadTooLarge: a ZIP over the entry or size limits.
            InvalidStudy: no usable CT slice (the detail lists why each object was skipped).
            UnsupportedImage: a transfer syntax that cannot be decoded here.
        """
        if not uploads:
            raise InvalidUpload("Send the DICOM files of one series (field 'files', repeated) or one ZIP.")
        objects = series_objects(uploads, self.archive_limits)
        try:
            return assemble_series(objects, max_pixels=self.max_pixels, max_slices=self.max_slices)
        except UnsupportedImageError as exc:
            raise UnsupportedImage(str(exc)) from exc
        except SeriesError as exc:
            raise InvalidStudy(str(exc)) from exc

    def create_from_series(
        self,
        series: StudySeries,
        fields: UploadFields,
        source: str,
        model_name: str | None = None,
        model_version: str | None = None,
        decode_ms: float = 0.0,
        details: dict[str, Any] | None = None,
        segment: bool = True,
        claim: Claim | None = None,
        job: JobAttempt | None = None,
    ) -> StudyRecord:
        """Classify (and outline) every slice of an assembled series, decide the study, and store it all.

        With a ``claim`` (the PACS path), its heartbeat is refreshed between batches and the study
        is linked to it in the transaction that stores the rows: a claim taken over by another
        worker (``ClaimLost``) leaves nothing stored. With a ``job``, the progress is recorded after
        each batch and the finished study takes the place of the job's row.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
        timings = StageTimings(started=time.perf_counter() - decode_ms / 1000.0)
        classifier = self.registry.get(model_name, model_version)
        analysis = self._analyse(
            classifier, series, segment, claim.heartbeat if claim else None, job.progress if job else None
        )
        study = self._decided_study(classifier, series, analysis, fields, source, details or {}, job)
        slices = slice_rows(study.id, series, analysis.probabilities)
        timings.add("decode", decode_ms)
        analysis.add_timings(timings)
        self._store(study, slices, analysis.files, timings, claim, job)
        self.pipeline.count_inference(classifier.name, classifier.version, analysis.model_ms)
        logger.info(
            "study %s stored: series=%s slices=%d label=%s aggregation=%s model=%s/%s",
            study.id,
            short_id(series.series_instance_uid or ""),
            len(slices),
            study.label,
            study.aggregation,
            classifier.name,
            classifier.version,
        )
        return StudyRecord(study=study, slices=slices)

    def _decided_study(
        self,
        classifier: SliceClassifier,
        series: StudySeries,
        analysis: SeriesAnalysis,
        fields: UploadFields,
        source: str,
        details: dict[str, Any],
        job: JobAttempt | None,
    ) -> Study:
        """The new study's row: its slices' probabilities aggregated and decided by the classifier's
        rule, its series and patient, and its details (in place of its job's row when it has one)."""
        decision = StudyDecision.for_classifier(classifier)
        probability = aggregate(analysis.probabilities, decision.aggregation)
        criteria = decision.criteria(probability, analysis.segmentation)
        identity = new_record_columns(classifier.name, classifier.version)
        if job is not None:
            identity["id"] = job.study_id
        return Study(
            **identity,
            probability=probability,
            label=Label.decided(bool(criteria.flagged_by)),
            threshold=decision.threshold,
            operating_point=decision.operating_point,
            aggregation=decision.aggregation,
            num_slices=len(series.slices),
            status=JOB_DONE,
            progress_done=len(series.slices),
            progress_total=len(series.slices),
            failure=None,
            failure_status=None,
            source=source,
            study_instance_uid=series.study_instance_uid,
            series_instance_uid=series.series_instance_uid,
            **patient_columns(fields, series.metadata),
            details=self._details(classifier, series, analysis, {**details, "criteria": criteria}).stored(),
        )

    def _details(
        self,
        classifier: SliceClassifier,
        series: StudySeries,
        analysis: SeriesAnalysis,
        extra: dict[str, Any],
    ) -> StudyDetails:
        """What the study keeps besides its columns: how it was decided and ordered, what was
        skipped, and the volumes of the outlines (the time they take counts as segmentation)."""
        details = StudyDetails.model_validate(
            {
                "slice_threshold": classifier.threshold,
                "slice_operating_point": classifier.operating_point.slice.source,
                "key_slices": key_slice_indices(analysis.probabilities),
                "ordering": series.ordering,
                "skipped": [SkippedFile(name=item.name, reason=item.reason) for item in series.skipped],
                "other_series": list(series.other_series),
                **extra,
            }
        )
        if analysis.segmentation is not None:
            started = time.perf_counter()
            details.segmentation = StudySegmentationRecord.model_validate(
                analysis.segmentation.summary(
                    [item.position_mm for item in series.slices],
                    series.metadata.get("pixel_spacing_mm"),
                    series.metadata.get("slice_thickness_mm"),
                )
            )
            analysis.segmentation_ms += (time.perf_counter() - started) * 1000.0
        return details

    def _store(
        self,
        study: Study,
        slices: builtins.list[StudySlice],
        files: dict[str, bytes],
        timings: StageTimings,
        claim: Claim | None,
        job: JobAttempt | None = None,
    ) -> None:
        """The storage stage: the files, then the study (in place of its job's row), its slices and
        its claim in one transaction."""
        started = time.perf_counter()

        def add_rows(session: Session) -> None:
            timings.add("storage", (time.perf_counter() - started) * 1000.0)
            study.timings_ms = timings.finish()
            if job is None:
                session.add(study)
            else:
                job.finish(session, study)
            session.flush()
            session.add_all(slices)
            if claim is not None:
                claim.attach(session, study.id)

        self.records.store(study.id, files, add_rows)

    def _analyse(
        self,
        classifier: SliceClassifier,
        series: StudySeries,
        segment: bool = True,
        between_batches: Callable[[], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> SeriesAnalysis:
        """The model and images stages, one batch of slices at a time; ``progress`` hears of each
        finished batch (slices done, slices in all)."""
        outlines = classifier.outlines(self.registry.segmenter(), segment)
        analysis = SeriesAnalysis(segmentation=StudySegmentation() if outlines else None)
        for start in range(0, len(series.slices), BATCH_SIZE):
            if between_batches is not None:
                between_batches()
            batch = series.slices[start : start + BATCH_SIZE]
            started = time.perf_counter()
            results = self.pipeline.classify_batch(classifier, [item.image for item in batch], segment)
            analysis.add_batch(start, results, (time.perf_counter() - started) * 1000.0)
            if progress is not None:
                progress(start + len(batch), len(series.slices))
        return analysis

    def get(self, study_id: str) -> StudyRecord:
        """A stored study and its slices (``NotFound`` when there is none)."""
        return self.with_slices(self.records.get(study_id))

    def with_slices(self, study: Study) -> StudyRecord:
        """A study row already read, with its slices."""
        slices = self.records.dependent_rows(StudySlice, study.id, StudySlice.slice_index)
        return StudyRecord(study=study, slices=slices)

    def find_by_study_uid(self, study_instance_uid: str) -> builtins.list[Study]:
        """Stored analyses of one DICOM study, newest first."""
        return self.records.where(
            Study.study_instance_uid == study_instance_uid, order_by=Study.created_at.desc()
        )

    def read_file(self, study_id: str, name: str) -> bytes:
        """A stored file of a study; the PDF report is rendered on first request."""
        study = self.records.get(study_id)
        if study.label == PENDING_LABEL:
            raise NotFound(f"Study {study_id} has no files yet: its analysis is {study.status}.")
        if name == "report.pdf":
            return self.records.cached_file(study_id, name, lambda: self.render_report(self.get(study_id)))
        return self.records.read_file(study_id, name)

    def render_report(self, record: StudyRecord) -> bytes:
        """The PDF study report (:func:`app.services.study_pdf.render_study_pdf`)."""
        from app.services.study_pdf import render_study_pdf

        return render_study_pdf(self.registry, self.files, record)
