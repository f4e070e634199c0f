"""One analysis per PACS series and model version, however many workers and replicas run.

Every uvicorn worker runs the PACS watcher and answers ``POST /api/v1/studies/dicomweb``, so two
of them can meet on the same study. Before retrieving a series, a worker inserts a row in
``analysis_claims``; its unique constraint on (study, series, model name, model version) lets
exactly one insert succeed, whatever the number of processes or machines. The holder refreshes
``heartbeat_at`` while it works, links the study in the same transaction that stores the study's
rows, and marks the claim ``done`` once the results are stored back in the PACS. The others skip
the series (``AnalysisInProgress``), or answer with the finished analysis.

A claim whose holder died (its heartbeat older than the claim timeout), or whose attempt failed,
is taken over with a conditional ``UPDATE`` that only one worker can win. A holder that finds its
claim taken over (``ClaimLost``) drops its work: its study rows are rolled back.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Update, and_, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.core.errors import AnalysisInProgress, ClaimLost
from app.db import AnalysisClaim, Database, utcnow
from app.services.analysis import short_id

logger = logging.getLogger(__name__)

RUNNING = "running"
DONE = "done"
FAILED = "failed"
# How long a caller told "being analysed" waits before asking again (the Retry-After header).
RETRY_AFTER_SECONDS = 10
# A claim row can vanish between the failed insert and the read (its study was deleted): try again.
ACQUIRE_ATTEMPTS = 3


def rows_changed(session: Session, statement: Update) -> int:
    """Run a conditional UPDATE; the rows it changed (0 when its WHERE no longer matched)."""
    return int(cast("CursorResult[Any]", session.execute(statement)).rowcount)


@dataclass(frozen=True)
class AnalysisKey:
    """What is analysed once: one series of one study, by one model version."""

    study_instance_uid: str
    series_instance_uid: str
    model_name: str
    model_version: str

    def matches(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses that select this key's claim."""
        return [
            AnalysisClaim.study_instance_uid == self.study_instance_uid,
            AnalysisClaim.series_instance_uid == self.series_instance_uid,
            AnalysisClaim.model_name == self.model_name,
            AnalysisClaim.model_version == self.model_version,
        ]


@dataclass(frozen=True)
class FinishedAnalysis:
    """The key was analysed and its results stored back: ``study_id`` is the result."""

    study_id: str


@dataclass
class Claim:
    """A claim this worker holds. ``study_id`` is set when an earlier holder stored the study."""

    store: ClaimStore
    id: str
    key: AnalysisKey
    owner: str
    study_id: str | None = None
    _last_beat: float = field(default_factory=time.monotonic)

    def held(self, running: bool = False) -> list[ColumnElement[bool]]:
        """The WHERE clauses that select this claim while this worker holds it (and, with
        ``running``, while it is still being analysed)."""
        clauses = [AnalysisClaim.id == self.id, AnalysisClaim.owner == self.owner]
        return [*clauses, AnalysisClaim.status == RUNNING] if running else clauses

    def heartbeat(self, force: bool = False) -> None:
        """Show that this worker is alive; raises ``ClaimLost`` when another worker took over."""
        if not force and time.monotonic() - self._last_beat < self.store.heartbeat_interval:
            return
        self.store.heartbeat(self)
        self._last_beat = time.monotonic()

    def attach(self, session: Session, study_id: str) -> None:
        """Link the stored study, inside the transaction that writes its rows.

        Raises ``ClaimLost`` when the claim is no longer this worker's, so that the transaction
        rolls back and no second study of the key is ever committed.
        """
        now = utcnow()
        updated = rows_changed(
            session,
            update(AnalysisClaim)
            .where(*self.held(running=True), AnalysisClaim.study_id.is_(None))
            .values(study_id=study_id, heartbeat_at=now),
        )
        if updated != 1:
            raise self.store.lost(self)
        self.study_id = study_id
        self._last_beat = time.monotonic()

    def finish(self) -> None:
        """Mark the analysis done: its results are stored, here and in the PACS."""
        with self.store.database.session() as session:
            updated = rows_changed(
                session,
                update(AnalysisClaim).where(*self.held()).values(status=DONE, heartbeat_at=utcnow()),
            )
        if updated != 1:
            # Another worker took over while the results were being stored back; it will store them again.
            logger.warning("Claim %s was taken over before it could be marked done.", short_id(self.id))

    def release(self) -> None:
        """After an error: mark the claim failed, so that a later request or poll may take it over."""
        try:
            with self.store.database.session() as session:
                session.execute(
                    update(AnalysisClaim).where(*self.held()).values(status=FAILED, heartbeat_at=utcnow())
                )
        except SQLAlchemyError as exc:
            # The claim then times out instead.
            logger.warning("Could not release claim %s: %s", short_id(self.id), type(exc).__name__)


class ClaimStore:
    """Claims on analyses in the database, held by this process (``process``: host and pid)."""

    def __init__(self, database: Database, timeout_seconds: float, process: str | None = None) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}.")
        self.database = database
        self.timeout = timedelta(seconds=timeout_seconds)
        # Four heartbeats per timeout: one late or slow heartbeat never makes a live claim look stuck.
        self.heartbeat_interval = timeout_seconds / 4
        # Short enough for the owner column with a random suffix, whatever the host name.
        self.process = (process or f"{socket.gethostname()[:64]}:{os.getpid()}")[:80]

    def acquire(self, key: AnalysisKey) -> Claim | FinishedAnalysis:
        """Claim ``key``, take over a stuck or failed claim, or return the finished analysis.

        Raises:
            AnalysisInProgress: another worker holds a live claim on ``key``.
        """
        for _ in range(ACQUIRE_ATTEMPTS):
            owner = f"{self.process}:{secrets.token_hex(4)}"
            claim_id = str(uuid.uuid4())
            now = utcnow()
            try:
                with self.database.session() as session:
                    session.add(
                        AnalysisClaim(
                            id=claim_id,
                            study_instance_uid=key.study_instance_uid,
                            series_instance_uid=key.series_instance_uid,
                            model_name=key.model_name,
                            model_version=key.model_version,
                            status=RUNNING,
                            owner=owner,
                            claimed_at=now,
                            heartbeat_at=now,
                        )
                    )
                return Claim(self, claim_id, key, owner)
            except IntegrityError:
                pass
            with self.database.session() as session:
                existing = session.scalars(select(AnalysisClaim).where(*key.matches())).one_or_none()
                if existing is None:
                    continue
                if existing.status == DONE and existing.study_id is not None:
                    return FinishedAnalysis(existing.study_id)
                taken = self._take_over(session, existing, owner, now)
            if taken is not None:
                return taken
            raise self.busy(existing)
        raise AnalysisInProgress(
            "The claim on this analysis keeps changing hands; try again in a moment.", RETRY_AFTER_SECONDS
        )

    def _take_over(
        self, session: Session, existing: AnalysisClaim, owner: str, now: datetime
    ) -> Claim | None:
        """Take a failed or stuck claim: only one of the workers that try can match the old owner."""
        cutoff = now - self.timeout
        updated = rows_changed(
            session,
            update(AnalysisClaim)
            .where(
                AnalysisClaim.id == existing.id,
                AnalysisClaim.owner == existing.owner,
                or_(
                    AnalysisClaim.status == FAILED,
                    and_(AnalysisClaim.status == RUNNING, AnalysisClaim.heartbeat_at < cutoff),
                ),
            )
            .values(owner=owner, status=RUNNING, claimed_at=now, heartbeat_at=now),
        )
        if updated != 1:
            return None
        # Read after the update: from here on only this worker can change the row.
        study_id = session.scalar(select(AnalysisClaim.study_id).where(AnalysisClaim.id == existing.id))
        logger.warning(
            "Took over the %s claim %s of %s (last heartbeat %s)%s.",
            existing.status,
            short_id(existing.id),
            existing.owner,
            f"{existing.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC",
            ", whose study is stored" if study_id else "",
        )
        key = AnalysisKey(
            existing.study_instance_uid,
            existing.series_instance_uid,
            existing.model_name,
            existing.model_version,
        )
        return Claim(self, existing.id, key, owner, study_id=study_id)

    def heartbeat(self, claim: Claim) -> None:
        with self.database.session() as session:
            updated = rows_changed(
                session,
                update(AnalysisClaim).where(*claim.held(running=True)).values(heartbeat_at=utcnow()),
            )
        if updated != 1:
            raise self.lost(claim)

    def busy(self, existing: AnalysisClaim) -> AnalysisInProgress:
        started = max(0.0, (utcnow() - existing.claimed_at).total_seconds())
        logger.info("Claim %s is held by %s; skipping.", short_id(existing.id), existing.owner)
        return AnalysisInProgress(
            f"Another worker is analysing this series with {existing.model_name} {existing.model_version} "
            f"(started {started:.0f} s ago); ask again in a moment for its result.",
            RETRY_AFTER_SECONDS,
        )

    def lost(self, claim: Claim) -> ClaimLost:
        logger.warning(
            "Claim %s was taken over by another worker; dropping this analysis.", short_id(claim.id)
        )
        return ClaimLost(
            f"Another worker took over the analysis of this series with {claim.key.model_name} "
            f"{claim.key.model_version}; ask again in a moment for its result.",
            RETRY_AFTER_SECONDS,
        )
