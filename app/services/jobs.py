"""Studies as jobs, run in the service's own process on a small pool of threads, or on the worker
processes of the job queue (``app.services.queue``, when ``ICH_JOB_QUEUE_URL`` is set).

``POST /api/v1/studies`` checks the upload (the series is read, the model chosen), stores the
study's row as ``queued`` with its inputs beside it, and answers at once; a worker thread then
analyses the series, recording the slices done after each batch (``running``), and stores the
finished study in place of the row (``done``), or records why it could not (``failed``).
``POST /api/v1/studies/dicomweb`` claims the PACS series in the request and queues the same way;
its job is done once the results are stored back in the PACS.

A row is run by one attempt at a time, whatever the number of processes: an attempt starts with a
conditional ``UPDATE`` from ``queued`` to ``running`` that only one process can win, names itself
in ``owner`` and refreshes ``heartbeat_at`` with the progress. Its results are committed only while
it still owns the row, in the transaction that writes the slices, so a failed or taken-over attempt
leaves no slice rows or files. A job whose process died (its owner is a process of this host that
is gone, or its heartbeat is older than the timeout) is queued again, at start-up and then
periodically, until it has been tried ``max_attempts`` times; then it is ``failed`` with the reason.
With the job queue, "handing a job to a worker" sends it to the queue, and the same recovery sends
it again; a worker given a job whose row another attempt runs, or that is done, does nothing.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from app.core.errors import AnalysisInProgress, ServiceError, StorageUnavailable
from app.db import PENDING_LABEL, Database, Study, utcnow
from app.services.analysis import UploadFields, new_record_columns, patient_columns, short_id
from app.services.claims import AnalysisKey, Claim, FinishedAnalysis, rows_changed
from app.services.job_attempts import (
    DONE,
    FAILED,
    GIVEN_UP,
    LIVE_QUEUES,
    QUEUED,
    RUNNING,
    UNEXPECTED_FAILURE,
    JobDeferred,
    JobLost,
    JobRequest,
    JobRun,
    owner_is_gone,
    queue_name,
)
from app.services.records import DATABASE_UNREACHABLE
from app.services.storage import JOB_INPUTS, STUDIES
from app.services.studies import StudyService
from app.services.study_record import StudyDecision, StudyRecord
from ml.data.series import StudySeries

if TYPE_CHECKING:
    from app.services.pacs import PacsService

logger = logging.getLogger(__name__)

# The longest a request may wait for a job to finish (?wait=N and Prefer: wait=N are capped to it).
MAX_WAIT_SECONDS = 120


class JobMetrics(Protocol):
    """What the jobs count: ``app.core.metrics.Metrics`` in a process that runs its own jobs, or
    the job queue's counts in Redis (``app.services.queue.RedisJobMetrics``)."""

    def job_queued(self, change: int) -> None: ...

    def observe_study_job(self, outcome: str, seconds: float) -> None: ...

    def count_study_job_failure(self) -> None: ...


class StudyJobs:
    """The queue of study jobs and the worker threads that run them, in this process; or, with
    ``send``, the jobs sent to the job queue's workers (``send(study_id)``: whether it was sent)."""

    def __init__(
        self,
        studies: StudyService,
        workers: int = 2,
        max_attempts: int = 3,
        timeout_seconds: float = 600.0,
        metrics: JobMetrics | None = None,
        pacs: PacsService | None = None,
        send: Callable[[str], bool] | None = None,
    ) -> None:
        if workers < 1 or max_attempts < 1 or timeout_seconds <= 0:
            raise ValueError(
                f"workers and max_attempts must be at least 1 and timeout_seconds positive, got "
                f"{workers}, {max_attempts} and {timeout_seconds}."
            )
        self.studies = studies
        self.pacs = pacs
        self.files = studies.files
        self.max_attempts = max_attempts
        self.timeout = timedelta(seconds=timeout_seconds)
        self.metrics = metrics
        self.send = send
        self.process = queue_name()
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="study-job")
        self._submitted: set[str] = set()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    @property
    def database(self) -> Database:
        """The database of the studies (the records layer's, whatever it is now)."""
        return self.studies.records.database

    def enqueue_upload(
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
        started = time.perf_counter()
        series = self.studies.read_series(uploads)
        decode_ms = (time.perf_counter() - started) * 1000.0
        classifier = self.studies.registry.get(model_name, model_version)
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
        self.submit(study.id, series=series)
        return study

    def enqueue_dicomweb(
        self, study_instance_uid: str, model_name: str | None = None, model_version: str | None = None
    ) -> Study | StudyRecord:
        """Claim a study of the PACS and queue its analysis; the stored analysis when there is one.

        As when the analysis ran inside the request: a series analysed before with this model
        version is returned, and one whose results never reached the PACS is stored back now
        (both a ``StudyRecord``); another worker's live claim raises ``AnalysisInProgress``.
        """
        pacs = self._require_pacs()
        claimed, num_candidates = pacs.claim_remote_study(study_instance_uid, model_name, model_version)
        if isinstance(claimed, FinishedAnalysis):
            return self.studies.get(claimed.study_id)
        if claimed.study_id is not None:
            record = pacs.analyse_claimed(claimed, num_candidates).record
            with self.database.session() as session:
                session.execute(
                    update(Study).where(Study.id == record.study.id).values(failure=None, failure_status=None)
                )
            return record
        key = claimed.key
        request = JobRequest(
            source="dicomweb",
            study_instance_uid=study_instance_uid,
            num_candidates=num_candidates,
            model_name=key.model_name,
            model_version=key.model_version,
            claim_id=claimed.id if self.send is not None else None,
            claim_owner=claimed.owner if self.send is not None else None,
        )
        try:
            study = self._queued_row(request, "dicomweb", 0)
            study.study_instance_uid = study_instance_uid
            study.series_instance_uid = key.series_instance_uid
            self._store_queued(study, request, {})
        except BaseException:
            claimed.release()
            raise
        self.submit(study.id, claim=(claimed, num_candidates))
        return study

    def _require_pacs(self) -> PacsService:
        if self.pacs is None:
            raise ValueError("This job queue was made without the PACS service.")
        return self.pacs

    def _queued_row(self, request: JobRequest, source: str, num_slices: int) -> Study:
        """The row of a new job: the model and its decision rule, placeholders for the result."""
        classifier = self.studies.registry.get(request.model_name, request.model_version)
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
            owner=self.process,
            heartbeat_at=utcnow(),
            timings_ms={},
            details={},
        )

    def _store_queued(self, study: Study, request: JobRequest, inputs: dict[str, bytes]) -> None:
        """Store a job's inputs, then its row; neither stays when the other cannot be stored."""
        self.files.save(study.id, {**inputs, "job.json": request.model_dump_json().encode()}, JOB_INPUTS)
        try:
            with self.database.session() as session:
                session.add(study)
        except BaseException as exc:
            self.files.delete(study.id, JOB_INPUTS)
            if isinstance(exc, SQLAlchemyError):
                logger.error("Could not queue the study: %s", type(exc).__name__)
                raise StorageUnavailable(DATABASE_UNREACHABLE) from exc
            raise
        logger.info("study %s queued (%s): %d slices", study.id, study.source, study.num_slices)

    def submit(
        self,
        study_id: str,
        series: StudySeries | None = None,
        claim: tuple[Claim, int] | None = None,
    ) -> None:
        """Hand a queued job to the worker threads (``series``: already read; ``claim``: the PACS
        series claimed in the request, with the number of CT series; else found again), or send it
        to the job queue, whose worker reads both from the job's stored request."""
        if self.send is not None:
            self.send(study_id)
            return
        with self._changed:
            if study_id in self._submitted:
                return
            self._submitted.add(study_id)
        if self.metrics is not None:
            self.metrics.job_queued(1)
        self.executor.submit(self._run, study_id, series, claim)

    def run_delivered(self, study_id: str) -> None:
        """Run a job delivered by the job queue, on this worker process's own thread.

        A job whose row is left running or queued by a process that is gone (its worker was
        killed, and the queue handed the job back) is first queued again, or given up after its
        last attempt, exactly as the recovery would; a job that another live attempt runs, or that
        has ended, is left as it is.
        """
        with self.database.session() as session:
            row = session.get(Study, study_id)
        if row is None or row.status not in (QUEUED, RUNNING):
            logger.info("Study job %s was delivered again after it ended; nothing to do.", short_id(study_id))
            return
        stale = row.heartbeat_at is None or row.heartbeat_at < utcnow() - self.timeout
        if (stale or owner_is_gone(row.owner)) and not self._requeue(row):
            return
        self._run(study_id, None, None)

    def _start(self, study_id: str) -> JobRun | None:
        """Take a queued job for this process; None when another attempt has it or it is gone."""
        owner = f"{self.process}:{secrets.token_hex(3)}"
        with self.database.session() as session:
            changed = rows_changed(
                session,
                update(Study)
                .where(Study.id == study_id, Study.status == QUEUED)
                .values(status=RUNNING, owner=owner, attempts=Study.attempts + 1, heartbeat_at=utcnow()),
            )
        return JobRun(self, study_id, owner) if changed == 1 else None

    def _run(self, study_id: str, series: StudySeries | None, claim: tuple[Claim, int] | None) -> None:
        """One attempt at a job, on a worker thread: analyse, store, or record why it failed."""
        if self.metrics is not None:
            self.metrics.job_queued(-1)
        try:
            run = self._start(study_id)
            if run is None:
                if claim is not None:
                    claim[0].release()
                return
            started = time.perf_counter()
            outcome = self._attempt(run, series, claim)
            if self.metrics is not None and outcome is not None:
                self.metrics.observe_study_job(outcome, time.perf_counter() - started)
        except Exception:
            logger.exception("Study job %s could not be run", short_id(study_id))
        finally:
            with self._changed:
                self._submitted.discard(study_id)
                self._changed.notify_all()

    def _attempt(
        self, run: JobRun, series: StudySeries | None, claim: tuple[Claim, int] | None
    ) -> str | None:
        """Analyse and store the job's study; the outcome (done or failed), None when it was lost."""
        study_id = run.study_id
        try:
            request = JobRequest.model_validate_json(self.files.read(study_id, "job.json", JOB_INPUTS))
            # Files a dead attempt may have left half-stored under the study's id.
            self.files.delete(study_id, STUDIES)
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
            self.files.delete(study_id, JOB_INPUTS)
            logger.info("study job %s done", short_id(study_id))
        return outcome

    def _analyse_upload(self, run: JobRun, request: JobRequest, series: StudySeries | None) -> None:
        """Analyse an uploaded series (read again from the job's inputs after a restart) and store it."""
        decode_ms = request.decode_ms
        if series is None:
            started = time.perf_counter()
            uploads = [
                (name, self.files.read(run.study_id, f"input_{index:04d}", JOB_INPUTS))
                for index, name in enumerate(request.names)
            ]
            series = self.studies.read_series(uploads)
            decode_ms = (time.perf_counter() - started) * 1000.0
        self.studies.create_from_series(
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
        pacs = self._require_pacs()
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
        pacs = self._require_pacs()
        with self.database.session() as session:
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
        with self.database.session() as session:
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
        with self.database.session() as session:
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
        self.files.delete(run.study_id, JOB_INPUTS)
        if self.metrics is not None:
            self.metrics.count_study_job_failure()
        logger.warning("Study job %s failed: %s", short_id(run.study_id), reason)

    def wait(self, study_id: str, seconds: float) -> Study:
        """The study once its job is done or failed, or as it is after ``seconds`` (``NotFound``: none)."""
        deadline = time.monotonic() + max(0.0, min(seconds, MAX_WAIT_SECONDS))
        while True:
            study = self.studies.records.get(study_id)
            remaining = deadline - time.monotonic()
            if study.status in (DONE, FAILED) or remaining <= 0:
                return study
            with self._changed:
                # Woken when a job of this process ends; a job of another process is polled.
                self._changed.wait(min(remaining, 0.5))

    def recover(self) -> list[str]:
        """Queue again the jobs whose process died, or fail those tried ``max_attempts`` times.

        Returns the ids of the jobs queued again.
        """
        cutoff = utcnow() - self.timeout
        with self.database.session() as session:
            rows = list(session.scalars(select(Study).where(Study.status.in_((QUEUED, RUNNING)))))
        queued = []
        for row in rows:
            with self._changed:
                if row.id in self._submitted:
                    continue
            stale = row.heartbeat_at is None or row.heartbeat_at < cutoff
            if not (stale or owner_is_gone(row.owner)):
                # Queued or run by a live process (``owner`` names it).
                continue
            if self._requeue(row):
                queued.append(row.id)
                self.submit(row.id)
        if queued:
            logger.warning("Took up %d study jobs left by a stopped process.", len(queued))
        return queued

    def _requeue(self, row: Study) -> bool:
        """Queue a dead process's job again, or fail it after its last attempt; whether it was queued."""
        given_up = row.attempts >= self.max_attempts
        values = (
            {"status": FAILED, "failure": GIVEN_UP.format(attempts=row.attempts), "failure_status": 500}
            if given_up
            else {"status": QUEUED}
        )
        same_owner = Study.owner.is_(None) if row.owner is None else Study.owner == row.owner
        with self.database.session() as session:
            changed = rows_changed(
                session,
                update(Study)
                .where(Study.id == row.id, Study.status == row.status, same_owner)
                .values(owner=self.process, heartbeat_at=utcnow(), **values),
            )
        if changed != 1:
            return False
        if given_up:
            self.files.delete(row.id, JOB_INPUTS)
            if self.metrics is not None:
                self.metrics.count_study_job_failure()
            logger.warning("Study job %s given up after %d attempts.", short_id(row.id), row.attempts)
        return not given_up

    def start(self, interval_seconds: float | None = None) -> None:
        """Take up jobs left by a stopped process now, then check again every ``interval_seconds``."""
        LIVE_QUEUES.add(self.process)
        self.recover()
        interval = interval_seconds or self.timeout.total_seconds() / 4
        self._sweeper = threading.Thread(
            target=self._sweep, args=(interval,), name="study-job-recovery", daemon=True
        )
        self._sweeper.start()

    def _sweep(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.recover()
            except Exception:
                logger.exception("Could not check for study jobs left by a stopped process")

    def stop(self) -> None:
        """Stop taking up jobs; running attempts finish, queued ones stay queued for the next start."""
        self._stop.set()
        LIVE_QUEUES.discard(self.process)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._sweeper is not None:
            self._sweeper.join(5.0)
