"""A study job queued: the request checked, the study's row stored as ``queued`` with its inputs.

``POST /api/v1/studies`` checks the upload (the series is read, the model chosen), stores the
study's row as ``queued`` with its inputs beside it, and answers at once; a worker thread then
analyses the series, recording the slices done after each batch (``running``), and stores the
finished study in place of the row (``done``), or records why it could not (``failed``).
``POST /api/v1/studies/dicomweb`` claims the PACS series in the request and queues the same way;
its job is done once the results are stored back in the PACS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from app.core.errors import StorageUnavailable
from app.db import PENDING_LABEL, Study, utcnow
from app.services.analysis import UploadFields, new_record_columns, patient_columns
from app.services.claims import FinishedAnalysis
from app.services.jobs.attempts import QUEUED, JobRequest
from app.services.records import DATABASE_UNREACHABLE
from app.services.storage import JOB_INPUTS
from app.services.study_record import StudyDecision, StudyRecord

if TYPE_CHECKING:
    from app.services.jobs.service import StudyJobs

logger = logging.getLogger(__name__)


class JobIntake:
    """The requests that queue study jobs, checked and stored before a worker is handed the job."""

    def __init__(self, jobs: StudyJobs) -> None:
        self.jobs = jobs

    def upload(
        self,
        uploads: Sequence[tuple[str, bytes]],
        fields: UploadFields,
        model_name: str | None = None,
        model_version: str | None = None,
        segment: bool = True,
    ) -> Study:
        """Check an uploaded series, store it as a queued job and hand it to a worker.

        The errors a person can fix (no usable slice, an unknown model) are raised here, before
        anything is stored, exactly as when the analysis ran inside the request.
        """
        studies = self.jobs.studies
        started = time.perf_counter()
        series = studies.read_series(uploads)
        decode_ms = (time.perf_counter() - started) * 1000.0
        classifier = studies.registry.get(model_name, model_version)
        request = JobRequest(
            names=[name for name, _ in uploads],
            fields=asdict(fields),
            model_name=classifier.name,
            model_version=classifier.version,
            segment=segment,
            decode_ms=decode_ms,
        )
        study = self._queued_row(request, "upload", len(series.slices))
        study.study_instance_uid = series.study_instance_uid
        study.series_instance_uid = series.series_instance_uid
        for name, value in patient_columns(fields, series.metadata).items():
            setattr(study, name, value)
        inputs = {f"input_{index:04d}": data for index, (_, data) in enumerate(uploads)}
        self._store_queued(study, request, inputs)
        self.jobs.submit(study.id, series=series)
        return study

    def dicomweb(
        self, study_instance_uid: str, model_name: str | None = None, model_version: str | None = None
    ) -> Study | StudyRecord:
        """Claim a study of the PACS and queue its analysis; the stored analysis when there is one.

        As when the analysis ran inside the request: a series analysed before with this model
        version is returned, and one whose results never reached the PACS is stored back now
        (both a ``StudyRecord``); another worker's live claim raises ``AnalysisInProgress``.
        """
        pacs = self.jobs.require_pacs()
        claimed, num_candidates = pacs.claim_remote_study(study_instance_uid, model_name, model_version)
        if isinstance(claimed, FinishedAnalysis):
            return self.jobs.studies.get(claimed.study_id)
        if claimed.study_id is not None:
            record = pacs.analyse_claimed(claimed, num_candidates).record
            with self.jobs.database.session() as session:
                session.execute(
                    update(Study).where(Study.id == record.study.id).values(failure=None, failure_status=None)
                )
            return record
        key = claimed.key
        # A worker process of the job queue adopts the claim by its id and owner; a thread of this
        # process is handed the claim itself.
        queued = self.jobs.send is not None
        request = JobRequest(
            source="dicomweb",
            study_instance_uid=study_instance_uid,
            num_candidates=num_candidates,
            model_name=key.model_name,
            model_version=key.model_version,
            claim_id=claimed.id if queued else None,
            claim_owner=claimed.owner if queued else None,
        )
        try:
            study = self._queued_row(request, "dicomweb", 0)
            study.study_instance_uid = study_instance_uid
            study.series_instance_uid = key.series_instance_uid
            self._store_queued(study, request, {})
        except BaseException:
            claimed.release()
            raise
        self.jobs.submit(study.id, claim=(claimed, num_candidates))
        return study

    def _queued_row(self, request: JobRequest, source: str, num_slices: int) -> Study:
        """The row of a new job: the model and its decision rule, placeholders for the result."""
        classifier = self.jobs.studies.registry.get(request.model_name, request.model_version)
        decision = StudyDecision.for_classifier(classifier)
        return Study(
            **new_record_columns(classifier.name, classifier.version),
            probability=0.0,
            label=PENDING_LABEL,
            threshold=decision.threshold,
            operating_point=decision.operating_point,
            aggregation=decision.aggregation,
            num_slices=num_slices,
            source=source,
            status=QUEUED,
            progress_done=0,
            progress_total=num_slices,
            attempts=0,
            owner=self.jobs.process,
            heartbeat_at=utcnow(),
            timings_ms={},
            details={},
        )

    def _store_queued(self, study: Study, request: JobRequest, inputs: dict[str, bytes]) -> None:
        """Store a job's inputs, then its row; neither stays when the other cannot be stored."""
        files = self.jobs.files
        files.save(study.id, {**inputs, "job.json": request.model_dump_json().encode()}, JOB_INPUTS)
        try:
            with self.jobs.database.session() as session:
                session.add(study)
        except BaseException as exc:
            files.delete(study.id, JOB_INPUTS)
            if isinstance(exc, SQLAlchemyError):
                logger.error("Could not queue the study: %s", type(exc).__name__)
                raise StorageUnavailable(DATABASE_UNREACHABLE) from exc
            raise
        logger.info("study %s queued (%s): %d slices", study.id, study.source, study.num_slices)
