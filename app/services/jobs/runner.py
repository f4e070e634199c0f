"""One attempt at a study job: the row taken, the study analysed and stored, or why it failed.

A row is run by one attempt at a time, whatever the number of processes: an attempt starts with a
conditional ``UPDATE`` from ``queued`` to ``running`` that only one process can win, names itself
in ``owner`` and refreshes ``heartbeat_at`` with the progress. Its results are committed only while
it still owns the row, in the transaction that writes the slices, so a failed or taken-over attempt
leaves no slice rows or files.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from app.core.errors import AnalysisInProgress, ServiceError
from app.db import Study, utcnow
from app.services.analysis import UploadFields, short_id
from app.services.claims import AnalysisKey, Claim, FinishedAnalysis, rows_changed
from app.services.jobs.attempts import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    UNEXPECTED_FAILURE,
    JobDeferred,
    JobLost,
    JobRequest,
    JobRun,
)
from app.services.storage import JOB_INPUTS, STUDIES
from ml.data.series import StudySeries

if TYPE_CHECKING:
    from app.services.jobs.service import StudyJobs

logger = logging.getLogger(__name__)


class AttemptRunner:
    """Runs the attempts of this process's study jobs, one call to :meth:`run` each."""

    def __init__(self, jobs: StudyJobs) -> None:
        self.jobs = jobs

    def run(self, study_id: str, series: StudySeries | None, claim: tuple[Claim, int] | None) -> None:
        """Take the job and run one attempt at it, unless another attempt has it or it is gone
        (the claim handed with it is then released); its duration is counted by outcome."""
        run = self.start(study_id)
        if run is None:
            if claim is not None:
                claim[0].release()
            return
        started = time.perf_counter()
        outcome = self._attempt(run, series, claim)
        if self.jobs.metrics is not None and outcome is not None:
            self.jobs.metrics.observe_study_job(outcome, time.perf_counter() - started)

    def start(self, study_id: str) -> JobRun | None:
        """Take a queued job for this process; None when another attempt has it or it is gone."""
        owner = f"{self.jobs.process}:{secrets.token_hex(3)}"
        with self.jobs.database.session() as session:
            changed = rows_changed(
                session,
                update(Study)
                .where(Study.id == study_id, Study.status == QUEUED)
                .values(status=RUNNING, owner=owner, attempts=Study.attempts + 1, heartbeat_at=utcnow()),
            )
        return JobRun(self.jobs.database, study_id, owner) if changed == 1 else None

    def _attempt(
        self, run: JobRun, series: StudySeries | None, claim: tuple[Claim, int] | None
    ) -> str | None:
        """Analyse and store the job's study; the outcome (done or failed), None when it was lost."""
        study_id = run.study_id
        files = self.jobs.files
        try:
            request = JobRequest.model_validate_json(files.read(study_id, "job.json", JOB_INPUTS))
            # Files a dead attempt may have left half-stored under the study's id.
            files.delete(study_id, STUDIES)
            if request.source == "dicomweb":
                outcome = self._analyse_remote(run, request, claim)
            else:
                self._analyse_upload(run, request, series)
                outcome = DONE
        except JobLost:
            logger.warning("Study job %s was taken over or deleted; this attempt stops.", short_id(study_id))
            return None
        except JobDeferred:
            self._defer(run)
            return None
        except ServiceError as exc:
            self._fail(run, exc.detail, exc.status_code)
            return FAILED
        except Exception as exc:
            logger.exception("Study job %s failed", short_id(study_id))
            self._fail(run, UNEXPECTED_FAILURE.format(name=type(exc).__name__), 500)
            return FAILED
        if outcome == DONE:
            files.delete(study_id, JOB_INPUTS)
            logger.info("study job %s done", short_id(study_id))
        return outcome

    def _analyse_upload(self, run: JobRun, request: JobRequest, series: StudySeries | None) -> None:
        """Analyse an uploaded series (read again from the job's inputs after a restart) and store it."""
        studies = self.jobs.studies
        decode_ms = request.decode_ms
        if series is None:
            started = time.perf_counter()
            uploads = [
                (name, self.jobs.files.read(run.study_id, f"input_{index:04d}", JOB_INPUTS))
                for index, name in enumerate(request.names)
            ]
            series = studies.read_series(uploads)
            decode_ms = (time.perf_counter() - started) * 1000.0
        studies.create_from_series(
            series,
            UploadFields(**request.fields),
            "upload",
            request.model_name,
            request.model_version,
            decode_ms=decode_ms,
            segment=request.segment,
            job=run,
        )

    def _analyse_remote(self, run: JobRun, request: JobRequest, claim: tuple[Claim, int] | None) -> str:
        """Retrieve, analyse and store back a study of the PACS under its claim (claimed again after a
        restart). When the study is stored but its results do not reach the PACS, the analysis stays
        (done) and the job keeps the error, which asking again clears by storing them back."""
        pacs = self.jobs.require_pacs()
        run.done_when_stored = False
        if claim is None and request.claim_id and request.claim_owner:
            claim = self._adopt_claim(run.study_id, request)
        if claim is None:
            try:
                claimed, num_candidates = pacs.claim_remote_study(
                    request.study_instance_uid or "", request.model_name, request.model_version
                )
            except AnalysisInProgress as exc:
                # The claim of the process that died looks alive until its heartbeat is old.
                raise JobDeferred from exc
            if isinstance(claimed, FinishedAnalysis) or claimed.study_id not in (None, run.study_id):
                if not isinstance(claimed, FinishedAnalysis):
                    claimed.release()
                raise AnalysisInProgress(
                    "This series was analysed meanwhile by another worker; find it on the worklist."
                )
            claim = (claimed, num_candidates)
        claimed, num_candidates = claim
        try:
            pacs.analyse_claimed(claimed, num_candidates, job=run)
        except ServiceError as exc:
            if claimed.study_id != run.study_id:
                raise
            self._fail(run, exc.detail, exc.status_code, keep_result=True)
            return FAILED
        run.complete()
        return DONE

    def _adopt_claim(self, study_id: str, request: JobRequest) -> tuple[Claim, int] | None:
        """The claim that the request which queued the job took, when it is still held; None when
        it was released or taken over meanwhile (the series is then claimed again)."""
        pacs = self.jobs.require_pacs()
        with self.jobs.database.session() as session:
            series_instance_uid = session.scalar(
                select(Study.series_instance_uid).where(Study.id == study_id)
            )
        key = AnalysisKey(
            request.study_instance_uid or "",
            series_instance_uid or "",
            request.model_name,
            request.model_version,
        )
        claim = Claim(pacs.claims, request.claim_id or "", key, request.claim_owner or "")
        try:
            claim.heartbeat(force=True)
        except ServiceError:
            return None
        return claim, request.num_candidates

    def _defer(self, run: JobRun) -> None:
        """Queue the job again without counting this attempt; a later check of the jobs retries it."""
        with self.jobs.database.session() as session:
            rows_changed(
                session,
                update(Study)
                .where(*run.held())  # type: ignore[arg-type]
                .values(status=QUEUED, owner=None, attempts=Study.attempts - 1, heartbeat_at=utcnow()),
            )
        logger.info("Study job %s waits for its PACS series to be free.", short_id(run.study_id))

    def _fail(self, run: JobRun, reason: str, status_code: int, keep_result: bool = False) -> None:
        """Mark the job failed with a reason a person can act on; its inputs go. With
        ``keep_result`` the stored study stays (done) and only keeps the reason."""
        with self.jobs.database.session() as session:
            rows_changed(
                session,
                update(Study)
                .where(*run.held())  # type: ignore[arg-type]
                .values(
                    status=DONE if keep_result else FAILED,
                    failure=reason,
                    failure_status=status_code,
                    owner=None,
                ),
            )
        self.jobs.files.delete(run.study_id, JOB_INPUTS)
        if self.jobs.metrics is not None:
            self.jobs.metrics.count_study_job_failure()
        logger.warning("Study job %s failed: %s", short_id(run.study_id), reason)
