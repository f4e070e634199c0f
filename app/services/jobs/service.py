"""``StudyJobs``: the one object the service and the job queue's workers use for study jobs.

Jobs run in the service's own process on a small pool of threads, or on the worker processes of
the job queue (``app.services.queue``, when ``ICH_JOB_QUEUE_URL`` is set). Queuing a job
(:mod:`.intake`), one attempt at it (:mod:`.runner`) and the recovery of the jobs a stopped
process left (:mod:`.recovery`) are its parts. With the job queue, "handing a job to a worker"
sends it to the queue, and the same recovery sends it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from app.db import Database, Study
from app.services.analysis import short_id
from app.services.claims import Claim
from app.services.jobs.attempts import DONE, FAILED, QUEUED, RUNNING, queue_name
from app.services.jobs.intake import JobIntake
from app.services.jobs.recovery import JobRecovery
from app.services.jobs.runner import AttemptRunner
from app.services.studies import StudyService
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
        self.intake = JobIntake(self)
        self.runner = AttemptRunner(self)
        self.recovery = JobRecovery(self)
        # Queuing a job is the intake's: an upload checked, or a PACS study claimed, then stored.
        self.enqueue_upload = self.intake.upload
        self.enqueue_dicomweb = self.intake.dicomweb
        self._submitted: set[str] = set()
        self._changed = threading.Condition()

    @property
    def database(self) -> Database:
        """The database of the studies (the records layer's, whatever it is now)."""
        return self.studies.records.database

    def require_pacs(self) -> PacsService:
        """The PACS service; ``ValueError`` when this queue was made without it."""
        if self.pacs is None:
            raise ValueError("This job queue was made without the PACS service.")
        return self.pacs

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

    def is_submitted(self, study_id: str) -> bool:
        """Whether a job is handed to this process's worker threads and has not ended."""
        with self._changed:
            return study_id in self._submitted

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
        if self.recovery.is_abandoned(row) and not self.recovery.requeue(row):
            return
        self._run(study_id, None, None)

    def _run(self, study_id: str, series: StudySeries | None, claim: tuple[Claim, int] | None) -> None:
        """One attempt at a job, on a worker thread: analyse, store, or record why it failed."""
        if self.metrics is not None:
            self.metrics.job_queued(-1)
        try:
            self.runner.run(study_id, series, claim)
        except Exception:
            logger.exception("Study job %s could not be run", short_id(study_id))
        finally:
            with self._changed:
                self._submitted.discard(study_id)
                self._changed.notify_all()

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
        """Queue again the jobs whose process died, or fail those tried ``max_attempts`` times
        (:meth:`JobRecovery.recover`); the ids of the jobs queued again."""
        return self.recovery.recover()

    def start(self, interval_seconds: float | None = None) -> None:
        """Take up jobs left by a stopped process now, then check again every ``interval_seconds``."""
        self.recovery.start(interval_seconds)

    def stop(self) -> None:
        """Stop taking up jobs; running attempts finish, queued ones stay queued for the next start."""
        self.recovery.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.recovery.join(5.0)
