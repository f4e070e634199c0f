"""Claims on PACS analyses, on SQLite and PostgreSQL: one holder per key, takeover of stuck claims."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.core.errors import AnalysisInProgress, ClaimLost
from app.db import AnalysisClaim, Database, Study, utcnow
from app.services.claims import AnalysisKey, Claim, ClaimStore, FinishedAnalysis

KEY = AnalysisKey("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "ich-compact", "0.0.2")
T = TypeVar("T")


@pytest.fixture
def url(database_url: str | None, tmp_path: Path) -> str:
    """A migrated database: a new SQLite file, or a new database on the test PostgreSQL server."""
    url = database_url or f"sqlite:///{tmp_path / 'claims.sqlite3'}"
    database = Database(url)
    database.migrate()
    database.dispose()
    return url


@pytest.fixture
def database(url: str) -> Iterator[Database]:
    database = Database(url)
    yield database
    database.dispose()


def claim_row(key: AnalysisKey, owner: str) -> AnalysisClaim:
    now = utcnow()
    return AnalysisClaim(
        id=str(uuid.uuid4()),
        study_instance_uid=key.study_instance_uid,
        series_instance_uid=key.series_instance_uid,
        model_name=key.model_name,
        model_version=key.model_version,
        status="running",
        owner=owner,
        claimed_at=now,
        heartbeat_at=now,
    )


def study_row() -> Study:
    return Study(
        id=str(uuid.uuid4()),
        created_at=utcnow(),
        model_name=KEY.model_name,
        model_version=KEY.model_version,
        probability=0.2,
        label="no_hemorrhage",
        threshold=0.5,
        aggregation="max",
        num_slices=2,
        source="dicomweb",
        study_instance_uid=KEY.study_instance_uid,
        series_instance_uid=KEY.series_instance_uid,
        timings_ms={},
        details={},
    )


def make_stale(database: Database, claim_id: str, age: timedelta) -> None:
    with database.session() as session:
        session.execute(
            sa.update(AnalysisClaim).where(AnalysisClaim.id == claim_id).values(heartbeat_at=utcnow() - age)
        )


def read_claim(database: Database, claim_id: str) -> AnalysisClaim:
    with database.session() as session:
        claim = session.get(AnalysisClaim, claim_id)
    assert claim is not None
    return claim


def run_together(url: str, count: int, work: Callable[[Database], T]) -> list[T | BaseException]:
    """``work`` in ``count`` threads at once, each with its own engine (as separate processes have)."""
    barrier = threading.Barrier(count)
    results: list[T | BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        database = Database(url)
        try:
            barrier.wait(timeout=30)
            outcome: T | BaseException = work(database)
        except BaseException as exc:
            outcome = exc
        finally:
            database.dispose()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == count
    return results


def test_two_concurrent_inserts_of_one_key_one_wins(database: Database, url: str) -> None:
    """The unique constraint itself: the second insert waits for the first, then fails."""
    outcome: list[BaseException | None] = []

    def insert_second() -> None:
        other = Database(url)
        try:
            with other.session() as session:
                session.add(claim_row(KEY, "second"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            other.dispose()

    with database.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(sa.insert(AnalysisClaim).values(**row_values(claim_row(KEY, "first"))))
        second = threading.Thread(target=insert_second)
        second.start()
        second.join(timeout=1.0)
        # The second insert cannot finish while the first is undecided.
        assert second.is_alive() and outcome == []
        transaction.commit()
    second.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], IntegrityError)

    # Another series, or another model version, of the same study is another analysis.
    with database.session() as session:
        session.add(
            claim_row(AnalysisKey(KEY.study_instance_uid, "1.2.3.9", KEY.model_name, KEY.model_version), "a")
        )
        session.add(
            claim_row(AnalysisKey(KEY.study_instance_uid, KEY.series_instance_uid, KEY.model_name, "9"), "b")
        )
    with database.session() as session:
        owners = {claim.owner for claim in session.scalars(sa.select(AnalysisClaim))}
    assert owners == {"first", "a", "b"}


def row_values(claim: AnalysisClaim) -> dict[str, object]:
    return {column.key: getattr(claim, column.key) for column in AnalysisClaim.__table__.columns}


def test_workers_that_claim_at_once_get_one_claim(url: str) -> None:
    results = run_together(url, 4, lambda database: ClaimStore(database, 600).acquire(KEY))
    claims = [result for result in results if isinstance(result, Claim)]
    refused = [result for result in results if isinstance(result, AnalysisInProgress)]
    assert len(claims) == 1 and len(refused) == 3, results
    assert all(item.status_code == 409 and item.retry_after for item in refused)
    assert "Another worker is analysing this series with ich-compact 0.0.2" in refused[0].detail


def test_a_live_claim_is_kept_and_a_stuck_one_taken_over_once(database: Database, url: str) -> None:
    first = ClaimStore(database, 60, process="worker-a").acquire(KEY)
    assert isinstance(first, Claim) and first.owner.startswith("worker-a:")
    # Heartbeats keep it: within the timeout nobody may take it.
    make_stale(database, first.id, timedelta(seconds=50))
    first.heartbeat(force=True)
    with pytest.raises(AnalysisInProgress):
        ClaimStore(database, 60, process="worker-b").acquire(KEY)

    # Its worker died: no heartbeat for longer than the timeout.
    make_stale(database, first.id, timedelta(seconds=61))
    results = run_together(url, 3, lambda other: ClaimStore(other, 60).acquire(KEY))
    taken = [result for result in results if isinstance(result, Claim)]
    assert len(taken) == 1, results
    assert sum(isinstance(result, AnalysisInProgress) for result in results) == 2
    assert taken[0].id == first.id and taken[0].study_id is None
    row = read_claim(database, first.id)
    assert row.owner == taken[0].owner and row.status == "running"
    assert row.heartbeat_at > utcnow() - timedelta(seconds=30)

    # The old holder wakes up: it may neither beat nor store its study.
    with pytest.raises(ClaimLost):
        first.heartbeat(force=True)
    study = study_row()
    with pytest.raises(ClaimLost), database.session() as session:
        session.add(study)
        session.flush()
        first.attach(session, study.id)
    with database.session() as session:
        assert session.get(Study, study.id) is None
    assert read_claim(database, first.id).owner == taken[0].owner


def test_a_failed_claim_is_taken_over_with_its_stored_study(database: Database) -> None:
    first = ClaimStore(database, 600).acquire(KEY)
    assert isinstance(first, Claim)
    study = study_row()
    with database.session() as session:
        session.add(study)
        session.flush()
        first.attach(session, study.id)
    # Storing the results back in the PACS failed.
    first.release()
    assert read_claim(database, first.id).status == "failed"

    second = ClaimStore(database, 600).acquire(KEY)
    assert isinstance(second, Claim)
    assert second.id == first.id and second.study_id == study.id and second.owner != first.owner
    second.finish()
    assert read_claim(database, first.id).status == "done"
    assert ClaimStore(database, 600).acquire(KEY) == FinishedAnalysis(study.id)
    # Even a finished claim that has gone silent is not analysed again.
    make_stale(database, first.id, timedelta(days=30))
    assert ClaimStore(database, 600).acquire(KEY) == FinishedAnalysis(study.id)


def test_deleting_the_study_deletes_its_claim(database: Database) -> None:
    claim = ClaimStore(database, 600).acquire(KEY)
    assert isinstance(claim, Claim)
    study = study_row()
    with database.session() as session:
        session.add(study)
        session.flush()
        claim.attach(session, study.id)
    claim.finish()
    with database.session() as session:
        session.execute(sa.delete(Study).where(Study.id == study.id))
    with database.session() as session:
        assert session.get(AnalysisClaim, claim.id) is None
    assert isinstance(ClaimStore(database, 600).acquire(KEY), Claim)


def test_claim_timeout_must_be_positive(database: Database) -> None:
    with pytest.raises(ValueError, match="timeout_seconds must be positive, got 0"):
        ClaimStore(database, 0)


def test_claim_times_are_stored_in_utc(database: Database) -> None:
    claim = ClaimStore(database, 600).acquire(KEY)
    assert isinstance(claim, Claim)
    row = read_claim(database, claim.id)
    assert row.claimed_at.tzinfo == UTC and abs(row.claimed_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_long_host_name_still_fits_the_owner_column(database: Database) -> None:
    claim = ClaimStore(database, 600, process="node-" + "x" * 200).acquire(KEY)
    assert isinstance(claim, Claim) and len(read_claim(database, claim.id).owner) <= 100
