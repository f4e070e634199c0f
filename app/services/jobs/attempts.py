"""What a study job is made of: its states, what it is asked to do, one attempt at it, and who owns it.

A job's row is owned by the queue of one process while it is queued, and by one attempt of that
queue while it runs (``owner``: ``host:pid:queue[:attempt]``); an owner whose process is gone lets
another queue take the job up (:mod:`app.services.jobs.recovery`).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import JOB_DONE, Database, Study, utcnow
from app.services.claims import rows_changed

QUEUED = "queued"
RUNNING = "running"
DONE = JOB_DONE
FAILED = "failed"
UNEXPECTED_FAILURE = (
    "The analysis stopped on an unexpected error ({name}); send the study again, and tell the "
    "administrator if it fails again."
)
GIVEN_UP = (
    "The analysis was interrupted {attempts} times (the service stopped while it ran) and was given "
    "up; send the study again, and tell the administrator if it happens again."
)


class JobLost(Exception):
    """This attempt no longer holds the job: another process took it over, or the study was deleted."""


class JobDeferred(Exception):
    """The job cannot run yet (its PACS series is still claimed by a worker that looks alive)."""


class JobRequest(BaseModel):
    """What a job analyses and with what, kept beside its files (``job.json``): an uploaded series
    (its file names, in order, and the form's fields), or a study of the PACS (its UID)."""

    source: Literal["upload", "dicomweb"] = "upload"
    names: list[str] = Field(default_factory=list)
    fields: dict[str, str | None] = Field(default_factory=dict)
    study_instance_uid: str | None = None
    num_candidates: int = Field(0, ge=0)
    # The claim on the PACS series taken in the request, for the worker process that runs the job
    # (job queue); the thread of the request's own process is handed the claim itself.
    claim_id: str | None = None
    claim_owner: str | None = None
    model_name: str
    model_version: str
    segment: bool = True
    # The time the series took to read in the request: the study's "decode" timing.
    decode_ms: float = Field(0.0, ge=0)


@dataclass
class JobRun:
    """One attempt at a job by this process, holding its row while it runs."""

    database: Database
    study_id: str
    owner: str
    # A study of the PACS is not done when it is stored, but once its results are stored back.
    done_when_stored: bool = True

    def held(self) -> list[object]:
        """The WHERE clauses that select the row while this attempt runs it."""
        return [Study.id == self.study_id, Study.owner == self.owner, Study.status == RUNNING]

    def progress(self, done: int, total: int) -> None:
        """Record the slices done (and show this process is alive); ``JobLost`` when no longer held."""
        with self.database.session() as session:
            changed = rows_changed(
                session,
                update(Study)
                .where(*self.held())  # type: ignore[arg-type]
                .values(progress_done=done, progress_total=total, heartbeat_at=utcnow()),
            )
        if changed != 1:
            raise JobLost(f"Study {self.study_id} is no longer this attempt's.")

    def finish(self, session: Session, study: Study) -> None:
        """Replace the row by the finished study, inside the transaction that writes its slices."""
        values = {"owner": None} if self.done_when_stored else {"heartbeat_at": utcnow()}
        changed = rows_changed(session, update(Study).where(*self.held()).values(**values))  # type: ignore[arg-type]
        if changed != 1:
            raise JobLost(f"Study {self.study_id} is no longer this attempt's.")
        if not self.done_when_stored:
            study.status = RUNNING
        session.merge(study)

    def complete(self) -> None:
        """Mark a study of the PACS done once its results are stored back."""
        with self.database.session() as session:
            changed = rows_changed(
                session,
                update(Study).where(*self.held()).values(status=DONE, owner=None),  # type: ignore[arg-type]
            )
        if changed != 1:
            raise JobLost(f"Study {self.study_id} is no longer this attempt's.")


# The job queues of this process that run, by name: a queue started again in the same process
# (tests, a reload) knows which owners are gone.
LIVE_QUEUES: set[str] = set()


def queue_name() -> str:
    """A new queue of this process, as ``host:pid:token``: the owner of the jobs it queues and runs."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}"


def owner_is_gone(owner: str | None) -> bool:
    """Whether a job's owner (``host:pid:queue[:attempt]``) was a queue of this host that no longer runs."""
    if not owner:
        return True
    host, pid_text, queue = ([*owner.split(":"), "", ""])[:3]
    if host != socket.gethostname()[:64] or not pid_text.isdigit():
        return False
    if int(pid_text) == os.getpid():
        return f"{host}:{pid_text}:{queue}" not in LIVE_QUEUES
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
