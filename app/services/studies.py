"""Whole CT studies: a series of DICOM slices in, per-slice probabilities and one study decision out.

The slices are read and ordered by :func:`ml.data.series.assemble_series`, classified in
batches through the same compiled forward and Grad-CAM pass as single slices, and combined
into one study probability with the aggregation named in the model card
(``study_aggregation``, default ``max``) against ``study_threshold`` (default: the slice
threshold). The windowed slice and its overlay are stored for every slice, so a reader can
scroll through the whole series. When a segmentation model is loaded, every slice is outlined in
the same batched pass, and the outlines give the study a volume of blood (voxel counting and the
bedside ABC/2 estimate).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from app.core.errors import (
    InvalidStudy,
    InvalidUpload,
    NotFound,
    StorageUnavailable,
    UnsupportedImage,
    UploadTooLarge,
)
from app.core.labels import Label
from app.core.metrics import Metrics
from app.db import CARD_OPERATING_POINT, AnalysisClaim, Database, Study, StudySlice, list_records, utcnow
from app.services.inference import (
    ModelRegistry,
    SliceClassifier,
    SliceSegmenter,
    run_all,
)
from app.services.predictions import (
    LIMITATIONS_FALLBACK,
    UploadFields,
    _first,
    card_metrics,
    short_id,
    slice_image_jobs,
)
from app.services.segmentation import (
    StudySegmentation,
    area_mm2,
    area_text,
    composite_png,
    most_outlined_slices,
    pixel_spacing,
)
from app.services.storage import STUDIES, FileStore
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

NUM_KEY_SLICES = 3
# Slices per forward pass: large enough to use the batched graph, small enough that a
# 300-slice study never holds more than one batch of heat maps and overlays in memory.
BATCH_SIZE = 16
SOURCES = ("upload", "dicomweb")


def slice_file(kind: str, index: int) -> str:
    """The stored file name of slice ``index`` (``kind``: ``"slice"``, ``"overlay"``, ``"mask"``, ``"contours"``)."""
    return f"{kind}_{index:03d}.png"


def key_slice_indices(probabilities: Sequence[float], count: int = NUM_KEY_SLICES) -> list[int]:
    """Indices of the ``count`` most probable slices, most probable first (ties: lower index first)."""
    order = sorted(range(len(probabilities)), key=lambda index: (-probabilities[index], index))
    return order[:count]


@dataclass
class StudyRecord:
    """A stored study and its slices in anatomical order."""

    study: Study
    slices: list[StudySlice]

    @property
    def key_slices(self) -> list[int]:
        stored = (self.study.details or {}).get("key_slices")
        if isinstance(stored, list):
            return [int(index) for index in stored]
        return key_slice_indices([item.probability for item in self.slices])

    @property
    def skipped(self) -> list[dict[str, str]]:
        return list((self.study.details or {}).get("skipped", []))


@dataclass(frozen=True)
class StudyDecision:
    """How a model turns slice probabilities into a study result."""

    aggregation: str
    threshold: float
    # Where the threshold came from: "model card default" or the site operating point's description.
    operating_point: str = CARD_OPERATING_POINT

    @classmethod
    def for_classifier(cls, classifier: SliceClassifier) -> StudyDecision:
        """The classifier's operating point: its card's ``study_aggregation`` and ``study_threshold``
        (with safe defaults), or the study threshold a site chose."""
        point = classifier.operating_point
        return cls(
            aggregation=point.aggregation, threshold=point.study.value, operating_point=point.study.source
        )


@dataclass
class _Analysis:
    """Probabilities and the encoded images of every slice of one series."""

    probabilities: list[float] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    model_ms: float = 0.0
    encode_ms: float = 0.0
    segmentation: StudySegmentation | None = None
    segmentation_ms: float = 0.0


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
        self.database = database
        self.files = files
        self.registry = registry
        self.max_pixels = max_pixels
        self.max_slices = max_slices
        self.archive_limits = archive_limits or ArchiveLimits()
        self.metrics = metrics

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
        objects: list[tuple[str, bytes]] = []
        for name, data in uploads:
            if not is_zip(data):
                objects.append((name, data))
                continue
            try:
                entries = extract_zip(data, self.archive_limits)
            except ArchiveTooLarge as exc:
                raise UploadTooLarge(f"{name}: {exc}") from exc
            except ArchiveError as exc:
                raise InvalidUpload(f"{name}: {exc}") from exc
            objects.extend((f"{name}/{entry}", content) for entry, content in entries)
        try:
            return assemble_series(objects, max_pixels=self.max_pixels, max_slices=self.max_slices)
        except UnsupportedImageError as exc:
            raise UnsupportedImage(str(exc)) from exc
        except SeriesError as exc:
            raise InvalidStudy(str(exc)) from exc

    def create(
        self,
        uploads: Sequence[tuple[str, bytes]],
        fields: UploadFields,
        model_name: str | None = None,
        model_version: str | None = None,
        segment: bool = True,
    ) -> StudyRecord:
        """Analyse an uploaded series and store it: files first, then the rows, all or nothing."""
        started = time.perf_counter()
        series = self.read_series(uploads)
        decode_ms = (time.perf_counter() - started) * 1000.0
        return self.create_from_series(
            series, fields, "upload", model_name, model_version, decode_ms=decode_ms, segment=segment
        )

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
    ) -> StudyRecord:
        """Classify (and outline) every slice of an assembled series, decide the study, and store it all.

        With a ``claim`` (the PACS path), its heartbeat is refreshed between batches and the study
        is linked to it in the transaction that stores the rows: a claim taken over by another
        worker (``ClaimLost``) leaves nothing stored.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
        total_started = time.perf_counter() - decode_ms / 1000.0
        classifier = self.registry.get(model_name, model_version)
        decision = StudyDecision.for_classifier(classifier)
        analysis = self._analyse(
            classifier,
            series,
            self.registry.segmenter(),
            segment,
            claim.heartbeat if claim else None,
        )
        probability = aggregate(analysis.probabilities, decision.aggregation)
        label = Label.decided(probability >= decision.threshold)
        key_slices = key_slice_indices(analysis.probabilities)
        metadata = series.metadata
        segmentation: dict[str, Any] = {}
        if analysis.segmentation is not None:
            started = time.perf_counter()
            segmentation["segmentation"] = analysis.segmentation.summary(
                [item.position_mm for item in series.slices],
                metadata.get("pixel_spacing_mm"),
                metadata.get("slice_thickness_mm"),
            )
            analysis.segmentation_ms += (time.perf_counter() - started) * 1000.0
        study_id = str(uuid.uuid4())
        study = Study(
            id=study_id,
            created_at=utcnow(),
            model_name=classifier.name,
            model_version=classifier.version,
            probability=probability,
            label=label,
            threshold=decision.threshold,
            operating_point=decision.operating_point,
            aggregation=decision.aggregation,
            num_slices=len(series.slices),
            source=source,
            study_instance_uid=series.study_instance_uid,
            series_instance_uid=series.series_instance_uid,
            patient_name=_first(fields.patient_name, metadata.get("patient_name")),
            patient_id=_first(fields.patient_id, metadata.get("patient_id")),
            study_description=_first(fields.study_description, metadata.get("study_description")),
            study_date=_first(metadata.get("study_date")),
            requesting_clinician=_first(fields.requesting_clinician),
            details={
                "slice_threshold": classifier.threshold,
                "slice_operating_point": classifier.operating_point.slice.source,
                "key_slices": key_slices,
                "ordering": series.ordering,
                "skipped": [{"name": item.name, "reason": item.reason} for item in series.skipped],
                "other_series": list(series.other_series),
                **segmentation,
                **(details or {}),
            },
        )
        slices = [
            StudySlice(
                study_id=study_id,
                slice_index=index,
                sop_instance_uid=item.sop_instance_uid,
                position_mm=item.position_mm,
                probability=analysis.probabilities[index],
            )
            for index, item in enumerate(series.slices)
        ]
        timings = {
            "decode": decode_ms,
            "model_and_gradcam": analysis.model_ms,
            "encode": analysis.encode_ms,
        }
        if analysis.segmentation is not None:
            timings["segmentation"] = analysis.segmentation_ms
        started = time.perf_counter()
        self.files.save(study_id, analysis.files, STUDIES)
        try:
            timings["storage"] = (time.perf_counter() - started) * 1000.0
            timings["total"] = (time.perf_counter() - total_started) * 1000.0
            study.timings_ms = {key: round(value, 2) for key, value in timings.items()}
            with self.database.session() as session:
                session.add(study)
                session.flush()
                session.add_all(slices)
                if claim is not None:
                    claim.attach(session, study_id)
        except SQLAlchemyError as exc:
            self.files.delete(study_id, STUDIES)
            logger.error("Could not store the study rows: %s", type(exc).__name__)
            raise StorageUnavailable(
                "The result could not be saved because the database is not reachable; nothing was "
                "saved. Try again, or ask the administrator to check the database."
            ) from exc
        except BaseException:
            self.files.delete(study_id, STUDIES)
            raise
        if self.metrics is not None:
            self.metrics.observe_inference(classifier.name, classifier.version, analysis.model_ms / 1000.0)
        logger.info(
            "study %s stored: series=%s slices=%d label=%s aggregation=%s model=%s/%s",
            study_id,
            short_id(series.series_instance_uid or ""),
            len(slices),
            label,
            decision.aggregation,
            classifier.name,
            classifier.version,
        )
        return StudyRecord(study=study, slices=slices)

    def _analyse(
        self,
        classifier: SliceClassifier,
        series: StudySeries,
        segmenter: SliceSegmenter | None = None,
        segment: bool = True,
        between_batches: Callable[[], None] | None = None,
    ) -> _Analysis:
        outlines = classifier.outlines(segmenter, segment)
        analysis = _Analysis(segmentation=StudySegmentation() if outlines else None)
        for start in range(0, len(series.slices), BATCH_SIZE):
            if between_batches is not None:
                between_batches()
            batch = series.slices[start : start + BATCH_SIZE]
            started = time.perf_counter()
            results = classifier.predict_many([item.image for item in batch], segmenter, segment)
            elapsed = (time.perf_counter() - started) * 1000.0
            segmentation_ms = sum(result.timings_ms.get("segmentation", 0.0) for result in results)
            analysis.model_ms += elapsed - segmentation_ms
            analysis.segmentation_ms += segmentation_ms
            started = time.perf_counter()
            names: list[str] = []
            jobs: list[Callable[[], bytes]] = []
            for offset, result in enumerate(results):
                analysis.probabilities.append(result.probability)
                for kind, job in slice_image_jobs(result, heatmap=False).items():
                    # The slice itself is stored as slice_NNN.png.
                    names.append(slice_file("slice" if kind == "original" else kind, start + offset))
                    jobs.append(job)
                if analysis.segmentation is not None and result.segmentation is not None:
                    analysis.segmentation.add(result.segmentation)
            analysis.files.update(zip(names, run_all(jobs), strict=True))
            analysis.encode_ms += (time.perf_counter() - started) * 1000.0
        return analysis

    def get(self, study_id: str) -> StudyRecord:
        with self.database.session() as session:
            study = session.get(Study, study_id)
            if study is None:
                raise NotFound(f"No study with id {study_id}.")
            slices = list(
                session.scalars(
                    select(StudySlice).where(StudySlice.study_id == study_id).order_by(StudySlice.slice_index)
                )
            )
        return StudyRecord(study=study, slices=slices)

    def find_by_study_uid(self, study_instance_uid: str) -> list[Study]:
        """Stored analyses of one DICOM study, newest first."""
        with self.database.session() as session:
            return list(
                session.scalars(
                    select(Study)
                    .where(Study.study_instance_uid == study_instance_uid)
                    .order_by(Study.created_at.desc())
                )
            )

    def list(
        self,
        page: int = 1,
        page_size: int = 20,
        label: str | None = None,
        patient_id: str | None = None,
        positives_first: bool = False,
    ) -> tuple[list[Study], int]:
        return list_records(self.database, Study, page, page_size, label, patient_id, positives_first)

    def update_details(self, study_id: str, **values: Any) -> Study:
        """Add entries to a study's details (what was stored back to the PACS, for example)."""
        with self.database.session() as session:
            study = session.get(Study, study_id)
            if study is None:
                raise NotFound(f"No study with id {study_id}.")
            study.details = {**(study.details or {}), **values}
        return study

    def delete(self, study_id: str) -> None:
        with self.database.session() as session:
            study = session.get(Study, study_id)
            if study is None:
                raise NotFound(f"No study with id {study_id}.")
            session.execute(delete(StudySlice).where(StudySlice.study_id == study_id))
            # Its claim goes with it, so that the PACS study may be analysed again.
            session.execute(delete(AnalysisClaim).where(AnalysisClaim.study_id == study_id))
            session.delete(study)
        self.files.delete(study_id, STUDIES)

    def read_file(self, study_id: str, name: str) -> bytes:
        """A stored file of a study; the PDF report is rendered on first request."""
        if name == "report.pdf":
            if not self.files.exists(study_id, name, STUDIES):
                self.files.write(study_id, name, self.render_report(self.get(study_id)), STUDIES)
        else:
            self.get(study_id)
        return self.files.read(study_id, name, STUDIES)

    def render_report(self, record: StudyRecord) -> bytes:
        """The PDF study report: chart of slice probabilities, key-slice overlays, the decision."""
        from app.services.reporting import (
            KeySlice,
            ReportModelInfo,
            StudyReport,
            render_study_report,
            study_report_section,
        )

        study = record.study
        card = self.registry.loaded_card(study.model_name, study.model_version)
        key_slices = [
            KeySlice(
                index=index,
                probability=record.slices[index].probability,
                position_mm=record.slices[index].position_mm,
                overlay_png=self.files.read(study.id, slice_file("overlay", index), STUDIES),
            )
            for index in record.key_slices
            if 0 <= index < len(record.slices)
        ]
        segmentation = (study.details or {}).get("segmentation")
        section = None
        if isinstance(segmentation, dict):
            images = []
            spacing = pixel_spacing(segmentation.get("pixel_spacing_mm"))
            for index in most_outlined_slices(segmentation):
                if not self.files.exists(study.id, slice_file("contours", index), STUDIES):
                    continue
                area = sum(int(value) for value in segmentation["slices"][index]["area_px"])
                images.append(
                    (
                        composite_png(
                            self.files.read(study.id, slice_file("slice", index), STUDIES),
                            self.files.read(study.id, slice_file("contours", index), STUDIES),
                        ),
                        f"Slice {index + 1}: {area_text(area, area_mm2(area, spacing))} outlined",
                    )
                )
            section = study_report_section(
                segmentation,
                self.registry.outline_card(segmentation),
                images,
            )
        report = StudyReport(
            report_id=study.id,
            created_at=study.created_at,
            probability=study.probability,
            label=study.label,
            threshold=study.threshold,
            operating_point=study.operating_point,
            aggregation=study.aggregation,
            slice_probabilities=[item.probability for item in record.slices],
            slice_threshold=float((study.details or {}).get("slice_threshold", study.threshold)),
            key_slices=key_slices,
            model=ReportModelInfo(
                name=study.model_name, version=study.model_version, metrics=card_metrics(card)
            ),
            limitations=list(card.get("limitations", LIMITATIONS_FALLBACK)) if card else LIMITATIONS_FALLBACK,
            patient_name=study.patient_name,
            patient_id=study.patient_id,
            study_description=study.study_description,
            study_date=study.study_date,
            requesting_clinician=study.requesting_clinician,
            source_format="DICOM series" if study.source == "upload" else "DICOM series from the PACS",
            skipped_count=len(record.skipped),
            segmentation=section,
        )
        return render_study_report(report)
