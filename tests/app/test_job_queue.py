"""Study jobs on the job queue: a real Redis and real worker processes (``python -m app.worker``).

A study posted to the API is analysed by a worker process with its progress visible; a worker
killed with SIGKILL in the middle of a job loses nothing (another worker finishes it, the attempts
counted, no half-written study); a job that kills its worker every time ends failed with the reason;
and however many workers and copies of a message there are, each job runs once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.config import Settings
from app.db import Study, StudySlice
from app.main import create_app
from app.services.jobs.attempts import GIVEN_UP
from tests.app.conftest import API_KEY, DATA_DIR
from tests.support.dicom_series import patient_jpegs, series_from_jpegs
from tests.support.job_queue import RedisServer, WorkerProcess

NUM_SLICES = 6
# Short enough that the recovery (every quarter of it) acts within seconds; a batch of the slowed
# worker beats the heartbeat well within it.
CLAIM_TIMEOUT_SECONDS = 8.0


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def series() -> list[tuple[str, bytes]]:
    return series_from_jpegs(patient_jpegs(DATA_DIR, "050")[8 : 8 + NUM_SLICES])


class Site:
    """The service (in this process) and its workers (other processes), on one Redis and one database."""

    def __init__(self, tmp_path: Path, model_store: Path, redis_server: RedisServer, max_attempts: int = 3):
        redis_server.flush()
        self.tmp_path = tmp_path
        self.env = {
            "ICH_DATA_DIR": str(tmp_path / "data"),
            "ICH_MODEL_STORE": str(model_store),
            "ICH_DEFAULT_MODEL": "ich-compact",
            "ICH_SEGMENTATION_MODEL": "",
            "ICH_API_KEYS": API_KEY,
            "ICH_JOB_QUEUE_URL": redis_server.url,
            "ICH_ANALYSIS_CLAIM_TIMEOUT_SECONDS": str(CLAIM_TIMEOUT_SECONDS),
            "ICH_STUDY_JOB_MAX_ATTEMPTS": str(max_attempts),
            "ICH_INFERENCE_THREADS": "1",
        }
        self.settings = Settings(
            data_dir=tmp_path / "data",
            model_store=model_store,
            default_model="ich-compact",
            segmentation_model="",
            api_keys=API_KEY,
            job_queue_url=redis_server.url,
            analysis_claim_timeout_seconds=CLAIM_TIMEOUT_SECONDS,
            study_job_max_attempts=max_attempts,
        )
        self.runs_log = tmp_path / "runs.log"
        self.workers: list[WorkerProcess] = []

    def worker(self, batch_seconds: float = 0.0) -> WorkerProcess:
        worker = WorkerProcess(self.env, self.tmp_path / "logs", batch_seconds, self.runs_log)
        self.workers.append(worker)
        return worker.start()

    def runs(self) -> list[tuple[int, str]]:
        if not self.runs_log.exists():
            return []
        return [
            (int(pid), study)
            for pid, study in (line.split() for line in self.runs_log.read_text().splitlines())
        ]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def site(tmp_path: Path, model_store: Path, redis_server: RedisServer) -> Iterator[Site]:
    running = Site(tmp_path, model_store, redis_server)
    try:
        yield running
    finally:
        running.stop()


def service(site: Site) -> TestClient:
    client = TestClient(create_app(site.settings))
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


def row(client: TestClient, study_id: str) -> Study:
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        study = session.get(Study, study_id)
        assert study is not None
        session.expunge(study)
        return study


def slice_rows(client: TestClient, study_id: str) -> int:
    with client.app.state.database.session() as session:  # type: ignore[attr-defined]
        return int(session.scalar(select(func.count()).where(StudySlice.study_id == study_id)) or 0)


def until(condition: Any, timeout: float = 60.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")


def running_attempt(client: TestClient, study_id: str, attempt: int, done: int = 2) -> Study:
    """The job's row once attempt ``attempt`` runs with at least ``done`` slices analysed."""

    def check() -> Study | None:
        study = row(client, study_id)
        ok = study.status == "running" and study.attempts == attempt and study.progress_done >= done
        return study if ok else None

    found: Study = until(check, what=f"attempt {attempt} of study {study_id} to run")
    return found


def owner_pid(study: Study) -> int:
    assert study.owner is not None
    return int(study.owner.split(":")[1])


def post(client: TestClient, series: list[tuple[str, bytes]]) -> str:
    response = client.post("/api/v1/studies", files=[("files", item) for item in series])
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    study_id: str = response.json()["id"]
    return study_id


def test_a_study_is_analysed_by_a_worker_process_with_its_progress_visible(
    site: Site, series: list[tuple[str, bytes]]
) -> None:
    with service(site) as client:
        study_id = post(client, series)
        # No worker yet: the job waits in the queue.
        time.sleep(1)
        assert row(client, study_id).status == "queued"
        assert "ich_study_jobs_queued 1.0" in client.get("/metrics").text
        worker = site.worker(batch_seconds=0.5)
        running = running_attempt(client, study_id, attempt=1)
        assert owner_pid(running) == worker.pid
        job = client.get(f"/api/v1/studies/{study_id}")
        assert job.status_code == 202 and job.json()["status"] == "running"
        assert job.json()["progress"]["done"] >= 2 and job.json()["progress"]["total"] == NUM_SLICES
        assert slice_rows(client, study_id) == 0

        done = client.get(f"/api/v1/studies/{study_id}?wait=60")
        assert done.status_code == 200, done.text
        assert len(done.json()["slices"]) == NUM_SLICES
        assert client.get(done.json()["links"]["report"]).content.startswith(b"%PDF")
        finished = row(client, study_id)
        assert finished.status == "done" and finished.attempts == 1 and finished.owner is None
        assert site.runs() == [(worker.pid, study_id)]

        text = client.get("/metrics").text
        assert "ich_study_jobs_queued 0.0" in text
        assert 'ich_study_job_duration_seconds_count{outcome="done"} 1.0' in text
        assert "ich_study_job_failures_total 0.0" in text
    assert not (site.settings.resolved_storage_dir / "jobs" / study_id).exists()


def test_a_job_whose_worker_is_killed_is_finished_by_another_worker(
    site: Site, series: list[tuple[str, bytes]]
) -> None:
    first = site.worker(batch_seconds=1.0)
    with service(site) as client:
        study_id = post(client, series)
        running = running_attempt(client, study_id, attempt=1)
        assert owner_pid(running) == first.pid
        first.kill()
        # Killed in the middle: nothing of the study is stored.
        assert slice_rows(client, study_id) == 0
        assert client.get(f"/api/v1/studies/{study_id}/report.pdf").status_code == 404

        second = site.worker(batch_seconds=0.0)
        done = client.get(f"/api/v1/studies/{study_id}?wait=60")
        assert done.status_code == 200, done.text
        assert len(done.json()["slices"]) == NUM_SLICES
        finished = row(client, study_id)
        assert finished.status == "done" and finished.attempts == 2 and finished.owner is None
        assert slice_rows(client, study_id) == NUM_SLICES
        assert [pid for pid, _ in site.runs()] == [first.pid, second.pid]
    storage = site.settings.resolved_storage_dir
    assert not (storage / "jobs" / study_id).exists()
    assert len(list((storage / "studies" / study_id).glob("slice_*.png"))) == NUM_SLICES


def test_a_worker_stopped_with_sigterm_finishes_its_job_first(
    site: Site, series: list[tuple[str, bytes]]
) -> None:
    worker = site.worker(batch_seconds=1.0)
    with service(site) as client:
        study_id = post(client, series)
        running_attempt(client, study_id, attempt=1)
        worker.stop()
        assert worker.process is not None and worker.process.returncode == 0
        finished = row(client, study_id)
        assert finished.status == "done" and finished.attempts == 1
        assert slice_rows(client, study_id) == NUM_SLICES


def test_a_job_that_kills_its_worker_every_time_ends_failed_with_the_reason(
    tmp_path: Path, model_store: Path, redis_server: RedisServer, series: list[tuple[str, bytes]]
) -> None:
    site = Site(tmp_path, model_store, redis_server, max_attempts=2)
    try:
        with service(site) as client:
            study_id = post(client, series)
            for attempt in (1, 2):
                worker = site.worker(batch_seconds=1.0)
                running = running_attempt(client, study_id, attempt=attempt)
                assert owner_pid(running) == worker.pid
                worker.kill()
            # The recovery gives the job up after its last attempt (no worker needs to run for that).
            failed = until(lambda: row(client, study_id).status == "failed", what="the job to fail")
            assert failed
            job = client.get(f"/api/v1/studies/{study_id}")
            assert job.status_code == 200
            assert job.json()["failure"] == GIVEN_UP.format(attempts=2)
            assert slice_rows(client, study_id) == 0
            # A worker that starts now, and a message of the job delivered again, change nothing.
            site.worker()
            client.app.state.job_queue.send(study_id)  # type: ignore[attr-defined]
            time.sleep(2)
            assert row(client, study_id).status == "failed" and row(client, study_id).attempts == 2
            assert "ich_study_job_failures_total 1.0" in client.get("/metrics").text
        storage = site.settings.resolved_storage_dir
        assert not (storage / "jobs" / study_id).exists() and not (storage / "studies" / study_id).exists()
    finally:
        site.stop()


def test_two_workers_never_run_one_job_twice(site: Site, series: list[tuple[str, bytes]]) -> None:
    workers = [site.worker(batch_seconds=0.2), site.worker(batch_seconds=0.2)]
    with service(site) as client:
        study_ids = [post(client, series[:4]) for _ in range(4)]
        # Every job sent twice more: as Redis does for a message whose worker did not acknowledge it.
        for study_id in study_ids:
            client.app.state.job_queue.send(study_id)  # type: ignore[attr-defined]
            client.app.state.job_queue.send(study_id)  # type: ignore[attr-defined]
        for study_id in study_ids:
            assert client.get(f"/api/v1/studies/{study_id}?wait=60").status_code == 200
            finished = row(client, study_id)
            assert finished.status == "done" and finished.attempts == 1
            assert slice_rows(client, study_id) == 4
        until(lambda: client.app.state.job_queue.length() == 0, what="the queue to drain")  # type: ignore[attr-defined]
        time.sleep(1)
    runs = site.runs()
    assert sorted(study for _, study in runs) == sorted(study_ids)
    # Both workers took jobs.
    assert {pid for pid, _ in runs} == {worker.pid for worker in workers}


def test_the_workers_watch_the_pacs_in_turns_and_queue_each_study_once(
    site: Site, redis_server: RedisServer
) -> None:
    from dicomweb_client.api import DICOMwebClient

    from app.db import AnalysisClaim
    from tests.app.test_pacs_workers import store_study
    from tests.support.orthanc import OrthancServer

    with OrthancServer() as orthanc:
        pacs = {
            "ICH_DICOMWEB_URL": orthanc.dicomweb_url,
            "ICH_DICOMWEB_POLL_SECONDS": "0.25",
            "ICH_DICOMWEB_POLL_LOOKBACK_DAYS": "36500",
        }
        site.env.update(pacs)
        site.settings = site.settings.model_copy(
            update={"dicomweb_url": orthanc.dicomweb_url, "dicomweb_poll_seconds": 0.25}
        )
        workers = [site.worker(), site.worker()]
        with service(site) as client:
            # The service itself does not poll: its workers do.
            assert client.app.state.watcher is None  # type: ignore[attr-defined]
            watched = [store_study(orthanc, first_slice=4 + 4 * index) for index in range(2)]
            # A study asked for through the API: claimed in the request, analysed by a worker.
            asked = store_study(orthanc, first_slice=16)
            response = client.post("/api/v1/studies/dicomweb", json={"study_instance_uid": asked})
            assert response.status_code == 202, response.text
            assert client.get(f"{response.json()['links']['self']}?wait=60").status_code == 200

            def analysed() -> bool:
                with client.app.state.database.session() as session:  # type: ignore[attr-defined]
                    done = session.scalar(
                        select(func.count()).select_from(Study).where(Study.status == "done")
                    )
                return done == 3

            until(analysed, timeout=120, what="the three studies to be analysed")
            # A few more polls, to give a second analysis every chance to happen.
            time.sleep(2)
            with client.app.state.database.session() as session:  # type: ignore[attr-defined]
                for study_uid in [*watched, asked]:
                    studies = list(
                        session.scalars(select(Study).where(Study.study_instance_uid == study_uid))
                    )
                    assert len(studies) == 1
                    assert studies[0].status == "done" and studies[0].attempts == 1
                    assert studies[0].failure is None and len(studies[0].details["stored_in_pacs"]) == 3
                    (claim,) = session.scalars(
                        select(AnalysisClaim).where(AnalysisClaim.study_instance_uid == study_uid)
                    )
                    assert claim.status == "done" and claim.study_id == studies[0].id
                    series = DICOMwebClient(orthanc.dicomweb_url).search_for_series(study_uid)
                    assert len(series) == 4
            # Stopped while the PACS still answers their polls.
            site.stop()
        assert all("Watching the PACS for new CT studies" in worker.log() for worker in workers)
        assert len(site.runs()) == 3


def test_a_job_queued_while_redis_is_down_is_sent_again_once_it_is_back(
    tmp_path: Path, model_store: Path, redis_server: RedisServer, series: list[tuple[str, bytes]]
) -> None:
    from bench.service import free_port

    port = free_port()
    site = Site(tmp_path, model_store, redis_server)
    site.env["ICH_JOB_QUEUE_URL"] = f"redis://127.0.0.1:{port}/0"
    site.settings = site.settings.model_copy(update={"job_queue_url": site.env["ICH_JOB_QUEUE_URL"]})
    try:
        with service(site) as client:
            # Nothing listens: the study is still stored and answered, and /metrics still answers.
            started = time.monotonic()
            study_id = post(client, series[:2])
            assert time.monotonic() - started < 10
            assert client.get("/metrics").status_code == 200
            with RedisServer(port=port):
                site.worker()
                done = client.get(f"/api/v1/studies/{study_id}?wait=60")
                assert done.status_code == 200, done.text
                assert row(client, study_id).attempts == 1
                site.stop()
    finally:
        site.stop()


def test_a_worker_without_the_queue_setting_refuses_to_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    from bench.service import PROJECT_ROOT

    env = {"PATH": "/usr/bin:/bin", "ICH_DATA_DIR": str(tmp_path), "ICH_JOB_QUEUE_URL": ""}
    result = subprocess.run(
        [sys.executable, "-m", "app.worker"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "set ICH_JOB_QUEUE_URL to the Redis of the job queue" in result.stderr
