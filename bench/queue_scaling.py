"""``python -m bench.queue_scaling``: studies per minute and queue wait of the study job queue with
1, 2 and 4 worker processes on this machine.

For each number of workers: a throw-away Redis, the service (``python -m app`` under uvicorn, with
``ICH_JOB_QUEUE_URL``) and that many ``python -m app.worker`` processes, each with
``ICH_INFERENCE_THREADS`` = cores / workers (at least 1). One untimed study per worker first (each
worker builds its compiled graph on its first batch), then ``--studies`` studies of ``--slices``
DICOM slices are posted back to back. The job rows are read from the database every 0.1 s, on a
thread of their own while the studies are posted: a study's queue wait runs from its ``202`` to
the first reading that finds it running, its run time from there to ``done``. Throughput is the
number of studies over the time from the first post to the last study done. The CPU time the
workers used (``/proc/PID/stat``) per study gives the studies one core analyses per minute, a
figure that other work on the machine does not lower. Written to ``--output`` as JSON; a table is
printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from bench.client import new_api_key
from bench.config import DEFAULT_MODEL, default_data_dir
from bench.inputs import build_dicom_series
from bench.job_queue import RedisServer, WorkerProcess
from bench.machine import machine_info, rss_mib
from bench.service import ServiceProcess
from bench.stats import summarize
from ml.cli import ArgumentParser

logger = logging.getLogger("bench.queue_scaling")

POLL_SECONDS = 0.1


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m bench.queue_scaling",
        description="Studies per minute and queue wait of the study job queue (Celery with Redis) "
        "with several worker processes. Run from the repository root.",
    )
    parser.add_argument(
        "--model-store", type=Path, default=Path("model_store"), help="Folder of model bundles."
    )
    parser.add_argument(
        "--model-name", default=DEFAULT_MODEL, help="Model the service and workers analyse with."
    )
    parser.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), help="Datasets folder (the RSNA DICOM slices)."
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2, 4], help="Worker processes to measure."
    )
    parser.add_argument("--studies", type=int, default=12, help="Timed studies for each number of workers.")
    parser.add_argument("--slices", type=int, default=40, help="Slices in each study.")
    parser.add_argument(
        "--output", type=Path, default=Path("artifacts/bench/queue_scaling.json"), help="Where the JSON goes."
    )
    return parser


def post_study(client: httpx.Client, series: list[bytes]) -> str:
    files = [("files", (f"slice_{index:03d}.dcm", data)) for index, data in enumerate(series)]
    response = client.post("/api/v1/studies", files=files)
    if response.status_code != 202:
        raise RuntimeError(f"The study was not queued: {response.status_code} {response.text[:300]}")
    study_id: str = response.json()["id"]
    return study_id


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process (all its threads) has used, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; the split starts at the 3rd.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Follower:
    """Reads the job rows every 0.1 s, on its own thread while the studies are posted, and notes
    when each study was first seen running and done (``time.perf_counter()``)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.posted: dict[str, float] = {}
        self.seen: dict[str, dict[str, float]] = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-follower", daemon=True)

    def __enter__(self) -> Follower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def add(self, study_id: str, posted_at: float) -> None:
        with self._lock:
            self.posted[study_id] = posted_at
            self.seen[study_id] = {}

    def _run(self) -> None:
        from app.db import Database, Study

        database = Database(self.database_url)
        try:
            while not self._stop.is_set():
                with self._lock:
                    ids = list(self.posted)
                if ids:
                    with database.session() as session:
                        rows = session.execute(
                            select(Study.id, Study.status, Study.failure).where(Study.id.in_(ids))
                        ).all()
                    now = time.perf_counter()
                    with self._lock:
                        for study_id, status, failure in rows:
                            if status == "failed":
                                self.error = f"Study {study_id} failed: {failure}"
                            if status in ("running", "done"):
                                self.seen[study_id].setdefault("running", now)
                            if status == "done":
                                self.seen[study_id].setdefault("done", now)
                time.sleep(POLL_SECONDS)
        finally:
            database.dispose()

    def wait(self, count: int, timeout: float) -> dict[str, dict[str, float]]:
        """The times of the ``count`` studies posted, once every one of them is done."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.error:
                    raise RuntimeError(self.error)
                finished = len(self.seen) == count and all("done" in times for times in self.seen.values())
                if finished:
                    return {study_id: dict(times) for study_id, times in self.seen.items()}
            if time.monotonic() > deadline:
                raise RuntimeError(f"Studies still unfinished after {timeout} s: {self.seen}")
            time.sleep(POLL_SECONDS)


def measure(
    workers: int, studies: int, series: list[bytes], arguments: argparse.Namespace, work_dir: Path
) -> dict[str, Any]:
    """One number of workers: start everything, warm up, time ``studies`` studies, stop."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    api_key = new_api_key()
    data_dir = work_dir / f"workers-{workers}"
    database_url = f"sqlite:///{data_dir / 'ich.sqlite3'}"
    with RedisServer() as redis_server:
        env = {
            "ICH_DATA_DIR": str(data_dir),
            "ICH_DATABASE_URL": database_url,
            "ICH_MODEL_STORE": str(arguments.model_store.resolve()),
            "ICH_DEFAULT_MODEL": arguments.model_name,
            "ICH_API_KEYS": api_key,
            "ICH_RATE_LIMIT_PER_MINUTE": "0",
            "ICH_JOB_QUEUE_URL": redis_server.url,
            "ICH_LOG_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        with ServiceProcess({**env, "ICH_WORKERS": "1"}) as server:
            started = time.perf_counter()
            processes = [
                WorkerProcess(
                    {**env, "ICH_LOG_LEVEL": "INFO", "ICH_INFERENCE_THREADS": str(threads)}, work_dir
                )
                for _ in range(workers)
            ]
            try:
                for process in processes:
                    process.launch()
                for process in processes:
                    process.wait_ready()
                start_s = time.perf_counter() - started
                with httpx.Client(
                    base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120
                ) as client:
                    logger.info("%d workers: warming up", workers)
                    with Follower(database_url) as warmup:
                        for _ in range(workers):
                            warmup.add(post_study(client, series), time.perf_counter())
                        warmup.wait(workers, timeout=600)
                    logger.info("%d workers: %d studies of %d slices", workers, studies, len(series))
                    load_at_start = [round(value, 2) for value in os.getloadavg()]
                    server_pid = server.process.pid if server.process is not None else 0
                    cpu_before = [cpu_seconds(process.pid) for process in processes], cpu_seconds(server_pid)
                    with Follower(database_url) as follower:
                        first_post = time.perf_counter()
                        for _ in range(studies):
                            follower.add(post_study(client, series), time.perf_counter())
                        posting_s = time.perf_counter() - first_post
                        seen = follower.wait(studies, timeout=1800)
                        posted = dict(follower.posted)
                    cpu_workers = sum(cpu_seconds(process.pid) for process in processes) - sum(cpu_before[0])
                    cpu_service = cpu_seconds(server_pid) - cpu_before[1]
                memory = [rss_mib(process.pid) for process in processes]
            finally:
                for process in processes:
                    process.stop()
    last_done = max(times["done"] for times in seen.values())
    elapsed = last_done - first_post
    per_minute = studies / elapsed * 60.0
    return {
        "workers": workers,
        "inference_threads_per_worker": threads,
        "studies": studies,
        "slices_per_study": len(series),
        "workers_start_s": round(start_s, 1),
        "load_average_at_start": load_at_start,
        "posting_s": round(posting_s, 2),
        "elapsed_s": round(elapsed, 2),
        "studies_per_minute": round(per_minute, 2),
        "studies_per_minute_per_core": round(per_minute / cores, 2),
        "slices_per_second": round(studies * len(series) / elapsed, 1),
        # CPU time per study, whatever else the machine runs: what a core can analyse per minute.
        "worker_cpu_s_per_study": round(cpu_workers / studies, 2),
        "service_cpu_s_per_study": round(cpu_service / studies, 2),
        "studies_per_minute_per_core_from_cpu": round(60.0 * studies / cpu_workers, 2),
        "queue_wait_s": summarize([seen[study_id]["running"] - posted[study_id] for study_id in posted]),
        "run_s": summarize([seen[study_id]["done"] - seen[study_id]["running"] for study_id in posted]),
        "worker_memory_mib": memory,
    }


def format_rows(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | threads each | studies/min | per core | slices/s | queue wait median (p95) "
        "| run median (p95) | worker CPU s per study | studies/min per core of CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        wait, run = row["queue_wait_s"], row["run_s"]
        lines.append(
            f"| {row['workers']} | {row['inference_threads_per_worker']} | {row['studies_per_minute']} | "
            f"{row['studies_per_minute_per_core']} | {row['slices_per_second']} | "
            f"{wait['median']} s ({wait['p95']} s) | {run['median']} s ({run['p95']} s) | "
            f"{row['worker_cpu_s_per_study']} | {row['studies_per_minute_per_core_from_cpu']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    series = build_dicom_series(arguments.data_dir, arguments.slices)
    results: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.queue_scaling", *(argv if argv is not None else sys.argv[1:])]),
        "model": arguments.model_name,
        "machine": machine_info(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="ich-queue-bench-") as folder:
        for workers in arguments.workers:
            results["runs"].append(measure(workers, arguments.studies, series, arguments, Path(folder)))
            logger.info("%s", json.dumps(results["runs"][-1]))
    results["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(format_rows(results["runs"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
