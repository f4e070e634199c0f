"""The study jobs a stopped process left, taken up again.

A job whose process died (its owner is a process of this host that is gone, or its heartbeat is
older than the timeout) is queued again, at start-up and then periodically, until it has been tried
``max_attempts`` times; then it is ``failed`` with the reason. With the job queue, the same recovery
sends it again; a worker given a job whose row another attempt runs, or that is done, does nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from app.db import Study, utcnow
from app.services.analysis import short_id
from app.services.claims import rows_changed
from app.services.jobs.attempts import FAILED, GIVEN_UP, LIVE_QUEUES, QUEUED, RUNNING, owner_is_gone
from app.services.storage import JOB_INPUTS

if TYPE_CHECKING:
    from app.services.jobs.service import StudyJobs

logger = logging.getLogger(__name__)


class JobRecovery:
    """Finds the jobs of processes that are gone and queues them again (or gives them up), at start
    and then on a thread of its own until stopped."""

    def __init__(self, jobs: StudyJobs) -> None:
        self.jobs = jobs
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def is_abandoned(self, row: Study) -> bool:
        """Whether the process that queued or runs a job is gone, or has not shown itself alive
        within the timeout."""
        stale = row.heartbeat_at is None or row.heartbeat_at < utcnow() - self.jobs.timeout
        return stale or owner_is_gone(row.owner)

    def recover(self) -> list[str]:
        """Queue again the jobs whose process died, or fail those tried ``max_attempts`` times.

        Returns the ids of the jobs queued again.
        """
        with self.jobs.database.session() as session:
            rows = list(session.scalars(select(Study).where(Study.status.in_((QUEUED, RUNNING)))))
        queued = []
        for row in rows:
            # Queued or run by a live process (``owner`` names it), or by this one.
            if self.jobs.is_submitted(row.id) or not self.is_abandoned(row):
                continue
            if self.requeue(row):
                queued.append(row.id)
                self.jobs.submit(row.id)
        if queued:
            logger.warning("Took up %d study jobs left by a stopped process.", len(queued))
        return queued

    def requeue(self, row: Study) -> bool:
        """Queue a dead process's job again, or fail it after its last attempt; whether it was queued."""
        given_up = row.attempts >= self.jobs.max_attempts
        values = (
            {"status": FAILED, "failure": GIVEN_UP.format(attempts=row.attempts), "failure_status": 500}
            if given_up
            else {"status": QUEUED}
        )
        same_owner = Study.owner.is_(None) if row.owner is None else Study.owner == row.owner
        with self.jobs.database.session() as session:
            changed = rows_changed(
                session,
                update(Study)
                .where(Study.id == row.id, Study.status == row.status, same_owner)
                .values(owner=self.jobs.process, heartbeat_at=utcnow(), **values),
            )
        if changed != 1:
            return False
        if given_up:
            self.jobs.files.delete(row.id, JOB_INPUTS)
            if self.jobs.metrics is not None:
                self.jobs.metrics.count_study_job_failure()
            logger.warning("Study job %s given up after %d attempts.", short_id(row.id), row.attempts)
        return not given_up

    def start(self, interval_seconds: float | None = None) -> None:
        """Take up jobs left by a stopped process now, then check again every ``interval_seconds``."""
        LIVE_QUEUES.add(self.jobs.process)
        self.recover()
        interval = interval_seconds or self.jobs.timeout.total_seconds() / 4
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
        """Stop checking (a check under way ends first); this process's queue no longer counts as live."""
        self._stop.set()
        LIVE_QUEUES.discard(self.jobs.process)

    def join(self, seconds: float) -> None:
        """Wait at most ``seconds`` for a check under way to end."""
        if self._sweeper is not None:
            self._sweeper.join(seconds)
