"""Studies as jobs: 202 and progress, waiting, failures with their reason, recovery after a stopped
process, one attempt at a time, the pages that follow a job, and the job metrics."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select, update

from app.api.routes.studies import wait_seconds
from app.core.config import Settings
from app.core.errors import NotFound, StorageUnavailable
from app.db import Database, Study, StudySlice, utcnow
from app.main import create_app
from app.services import studies as studies_module
from app.services.jobs import MAX_WAIT_SECONDS, StudyJobs
from app.services.jobs.attempts import GIVEN_UP, LIVE_QUEUES, JobRequest, owner_is_gone
from tests.app.conftest import API_KEY, DATA_DIR, OpenApp
from tests.support.dicom_series import patient_jpegs, series_from_jpegs

NUM_SLICES = 6


@pytest.fixture(scope="module")
def series() -> list[tuple[str, bytes]]:
    return series_from_jpegs(patient_jpegs(DATA_DIR, "050")[8 : 8 + NUM_SLICES])


def files_of(series: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", item) for item in series]


def jobs_of(client: TestClient) -> StudyJobs:
    jobs: StudyJobs = client.app.state.jobs  # type: ignore[attr-defined]
    return jobs


class Gate:
    """Holds the analysis after its first batch until opened, so a test can see a job running."""

    def __init__(self, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()
        pipeline = client.app.state.studies.pipeline  # type: ignore[attr-defined]
        original = pipeline.classify_batch
        calls = []

        def held(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 2:
                self.reached.set()
                assert self.opened.wait(60)
            return original(*args, **kwargs)

        monkeypatch.setattr(studies_module, "BATCH_SIZE", 2)
        monkeypatch.setattr(pipeline, "classify_batch", held)


def slice_rows(client: TestClient, study_id: str) -> int:
    database = client.app.state.database  # type: ignore[attr-defined]
    with database.session() as session:
        return int(session.scalar(select(func.count()).where(StudySlice.study_id == study_id)) or 0)


def test_a_study_is_queued_then_runs_with_progress_then_gives_todays_result(
    client: TestClient, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(client, monkeypatch)
    response = client.post("/api/v1/studies", files=files_of(series))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": NUM_SLICES}
    assert job["failure"] is None
    assert response.headers["location"] == job["links"]["self"] == f"/api/v1/studies/{job['id']}"
    assert job["links"]["page"] == f"/studies/{job['id']}"

    assert gate.reached.wait(60)
    running = client.get(job["links"]["self"])
    assert running.status_code == 202 and running.headers["location"] == job["links"]["self"]
    assert running.json()["status"] == "running"
    assert running.json()["progress"] == {"done": 2, "total": NUM_SLICES}
    # Not done yet: neither listed, nor any file or slice row.
    assert client.get("/api/v1/studies").json()["total"] == 0
    assert client.get(f"{job['links']['self']}/report.pdf").status_code == 404
    assert slice_rows(client, job["id"]) == 0
    assert client.get(f"{job['links']['self']}?wait=0").status_code == 202

    gate.opened.set()
    done = client.get(f"{job['links']['self']}?wait=60")
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["id"] == job["id"] and len(result["slices"]) == NUM_SLICES
    assert "status" not in result and "progress" not in result
    assert client.get(job["links"]["self"]).json() == result
    assert client.get("/api/v1/studies").json()["total"] == 1
    assert client.get(result["links"]["report"]).content.startswith(b"%PDF")


def test_waiting_answers_as_the_analysis_inside_the_request_did(
    client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    waited = client.post("/api/v1/studies?wait=60", files=files_of(series[:3]))
    assert waited.status_code == 201 and len(waited.json()["slices"]) == 3
    preferred = client.post(
        "/api/v1/studies", files=files_of(series[:3]), headers={"Prefer": "respond-async, wait=60"}
    )
    assert preferred.status_code == 201 and len(preferred.json()["slices"]) == 3
    assert set(preferred.json()) == set(waited.json())
    capped = client.post("/api/v1/studies?wait=100000", files=files_of(series[:2]))
    assert capped.status_code == 201
    assert client.post("/api/v1/studies?wait=-1", files=files_of(series[:2])).status_code == 422


def test_wait_is_read_from_the_query_else_the_prefer_header_and_capped() -> None:
    assert wait_seconds(None, None) == 0
    assert wait_seconds(30, "wait=90") == 30
    assert wait_seconds(None, "respond-async, wait=45") == 45
    assert wait_seconds(None, "wait = 7") == 7
    assert wait_seconds(None, "handling=lenient") == 0
    assert wait_seconds(None, "wait=500") == MAX_WAIT_SECONDS
    assert wait_seconds(100_000, None) == MAX_WAIT_SECONDS


def test_job_request_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"names": "one.dcm", "fields": {}, "model_name": "m", "model_version": "1"})
    with pytest.raises(ValidationError):
        JobRequest.model_validate({"names": [], "fields": {}, "model_name": "m"})


def test_a_failed_job_says_why_and_leaves_no_slices_or_files(
    client: TestClient, settings: Settings, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = client.app.state.studies.pipeline  # type: ignore[attr-defined]
    original = pipeline.classify_batch
    calls = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("the accelerator went away")
        return original(*args, **kwargs)

    monkeypatch.setattr(studies_module, "BATCH_SIZE", 2)
    monkeypatch.setattr(pipeline, "classify_batch", broken)
    response = client.post("/api/v1/studies?wait=60", files=files_of(series))
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert "unexpected error (RuntimeError)" in detail and "send the study again" in detail
    [study] = client.app.state.studies.list_unfinished()  # type: ignore[attr-defined]
    job = client.get(f"/api/v1/studies/{study.id}")
    assert job.status_code == 200
    assert job.json()["status"] == "failed" and job.json()["failure"] == detail
    assert job.json()["progress"] == {"done": 2, "total": NUM_SLICES}
    assert slice_rows(client, study.id) == 0
    storage = settings.resolved_storage_dir
    assert not (storage / "studies" / study.id).exists() and not (storage / "jobs" / study.id).exists()
    assert client.get("/api/v1/studies").json()["total"] == 0

    # A service error keeps its status code and its words.
    def full(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("The result could not be stored (storage full or not writable).")

    monkeypatch.setattr(pipeline, "classify_batch", full)
    refused = client.post("/api/v1/studies?wait=60", files=files_of(series[:2]))
    assert refused.status_code == 503 and "storage full" in refused.json()["detail"]


def leave_job(client: TestClient, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch) -> str:
    """A job queued with its inputs whose process stops before any worker runs it."""
    jobs = jobs_of(client)
    monkeypatch.setattr(jobs, "submit", lambda *args, **kwargs: None)
    response = client.post("/api/v1/studies", files=files_of(series))
    assert response.status_code == 202
    monkeypatch.undo()
    study_id: str = response.json()["id"]
    return study_id


def set_row(settings: Settings, study_id: str, **values: Any) -> None:
    """Change a study's row as a process that died would have left it."""
    database = Database(settings.resolved_database_url)
    try:
        with database.session() as session:
            session.execute(update(Study).where(Study.id == study_id).values(**values))
    finally:
        database.dispose()


def started(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings))
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


def died_running(
    settings: Settings, files: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch, attempts: int
) -> str:
    """A job whose process, on another host, died while running its attempt number ``attempts``:
    its heartbeat is an hour old."""
    with started(settings) as first:
        study_id = leave_job(first, files, monkeypatch)
    stale = utcnow() - timedelta(hours=1)
    owner = "elsewhere:1:dead:beef"
    set_row(settings, study_id, status="running", owner=owner, attempts=attempts, heartbeat_at=stale)
    return study_id


def test_a_job_left_running_by_a_dead_process_is_taken_up_after_a_restart(
    settings: Settings, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = died_running(settings, series[:4], monkeypatch, attempts=1)

    with started(settings) as second:
        result = second.get(f"/api/v1/studies/{study_id}?wait=60")
        assert result.status_code == 200, result.text
        assert len(result.json()["slices"]) == 4
        with second.app.state.database.session() as session:  # type: ignore[attr-defined]
            row = session.get(Study, study_id)
            assert row is not None and row.status == "done" and row.attempts == 2 and row.owner is None
    assert not (settings.resolved_storage_dir / "jobs" / study_id).exists()


def test_a_job_whose_process_on_this_host_is_gone_is_taken_up_at_once(
    settings: Settings, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with started(settings) as first:
        study_id = leave_job(first, series[:2], monkeypatch)
    # Left queued by a queue of this process that stopped, its heartbeat fresh: taken up at start.
    with started(settings) as second:
        assert second.get(f"/api/v1/studies/{study_id}?wait=60").status_code == 200


def test_a_job_interrupted_too_often_is_failed_with_the_reason(
    settings: Settings, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = died_running(settings, series[:2], monkeypatch, attempts=3)

    with started(settings) as second:
        job = second.get(f"/api/v1/studies/{study_id}").json()
        assert job["status"] == "failed" and job["failure"] == GIVEN_UP.format(attempts=3)
        assert "interrupted 3 times" in job["failure"]
        assert slice_rows(second, study_id) == 0
    assert not (settings.resolved_storage_dir / "jobs" / study_id).exists()


def test_a_live_attempt_is_left_alone_and_a_job_runs_once(
    client: TestClient, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = jobs_of(client)
    study_id = leave_job(client, series[:2], monkeypatch)
    # Another live queue in this process holds it, with a fresh heartbeat: not taken up.
    other = StudyJobs(client.app.state.studies)  # type: ignore[attr-defined]
    LIVE_QUEUES.add(other.process)
    try:
        run = other.runner.start(study_id)
        assert run is not None
        assert jobs.runner.start(study_id) is None
        assert jobs.recover() == []
        assert not owner_is_gone(run.owner)
    finally:
        LIVE_QUEUES.discard(other.process)
        other.stop()
    # Its queue stopped: the job is taken up, and however often it is submitted, run once.
    assert owner_is_gone(run.owner)
    database = client.app.state.database  # type: ignore[attr-defined]
    with database.session() as session:
        session.execute(update(Study).where(Study.id == study_id).values(status="queued", owner=None))
    runs = []
    original = client.app.state.studies.create_from_series  # type: ignore[attr-defined]

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(client.app.state.studies, "create_from_series", counted)  # type: ignore[attr-defined]
    second = StudyJobs(client.app.state.studies)  # type: ignore[attr-defined]
    try:
        second.submit(study_id)
        jobs.submit(study_id)
        assert jobs.wait(study_id, 60).status == "done"
        second.executor.shutdown(wait=True)
        jobs.executor.submit(lambda: None).result(30)
    finally:
        second.stop()
    assert len(runs) == 1
    with database.session() as session:
        row = session.get(Study, study_id)
        assert row is not None and row.attempts == 2


def test_job_metrics(
    client: TestClient, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.post("/api/v1/studies?wait=60", files=files_of(series[:2])).status_code == 201
    pipeline = client.app.state.studies.pipeline  # type: ignore[attr-defined]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no")

    monkeypatch.setattr(pipeline, "classify_batch", broken)
    assert client.post("/api/v1/studies?wait=60", files=files_of(series[:2])).status_code == 500
    text = client.get("/metrics").text
    assert 'ich_study_job_duration_seconds_count{outcome="done"} 1.0' in text
    assert 'ich_study_job_duration_seconds_count{outcome="failed"} 1.0' in text
    assert "ich_study_job_failures_total 1.0" in text
    assert "ich_study_jobs_queued 0.0" in text


def test_pages_follow_the_job_and_say_why_it_failed(
    open_app: OpenApp, model_store: Path, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_app(model_store, "ich-compact") as client:
        gate = Gate(client, monkeypatch)
        study_id = client.post("/api/v1/studies", files=files_of(series)).json()["id"]
        assert gate.reached.wait(60)
        page = client.get(f"/studies/{study_id}")
        assert page.status_code == 200
        assert "data-job-bar" in page.text and "2 of 6 slices" in page.text
        assert f'data-job="/studies/{study_id}/job"' in page.text
        job = client.get(f"/studies/{study_id}/job")
        assert job.json()["status"] == "running" and job.json()["progress"] == {"done": 2, "total": 6}
        worklist = client.get("/worklist")
        assert f'data-study-id="{study_id}" data-status="running"' in worklist.text
        assert "Analysing: 2 of 6 slices" in worklist.text
        gate.opened.set()
        assert jobs_of(client).wait(study_id, 60).status == "done"
        assert "Study probability of haemorrhage" in client.get(f"/studies/{study_id}").text

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise StorageUnavailable("The storage is full; ask the administrator to free some space.")

        pipeline = client.app.state.studies.pipeline  # type: ignore[attr-defined]
        monkeypatch.setattr(pipeline, "classify_batch", broken)
        failed_id = client.post("/api/v1/studies", files=files_of(series[:2])).json()["id"]
        assert jobs_of(client).wait(failed_id, 60).status == "failed"
        failed = client.get(f"/studies/{failed_id}")
        assert "The analysis failed. The storage is full" in failed.text
        worklist = client.get("/worklist")
        assert f'data-study-id="{failed_id}" data-status="failed"' in worklist.text
        assert "The storage is full" in worklist.text


def test_a_study_deleted_while_its_job_runs_leaves_nothing(
    client: TestClient, settings: Settings, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(client, monkeypatch)
    job = client.post("/api/v1/studies", files=files_of(series)).json()
    assert gate.reached.wait(60)
    assert client.delete(job["links"]["self"]).status_code == 204
    gate.opened.set()
    with pytest.raises(NotFound):
        jobs_of(client).wait(job["id"], 1)
    deadline = time.monotonic() + 60
    while job["id"] in jobs_of(client)._submitted:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.get(job["links"]["self"]).status_code == 404
    assert slice_rows(client, job["id"]) == 0
    storage = settings.resolved_storage_dir
    assert not (storage / "studies" / job["id"]).exists() and not (storage / "jobs" / job["id"]).exists()
