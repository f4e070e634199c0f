"""``python -m bench.queue_scaling``: studies per minute and queue wait of the study job queue with
1, 2 and 4 worker processes on this machine.

For each number of workers: a throw-away Redis, the service (``python -m app`` under uvicorn, with
``ICH_JOB_QUEUE_URL``) and that many ``python -m app.worker`` processes, each with
``ICH_INFERENCE_THREADS`` = cores / workers (at least 1). One untimed study per worker first (each
worker builds its compiled graph on its first batch), then ``--studies`` studies of
``--slices`` DICOM slices are posted back to back. The job rows are read from the database every
0.1 s: a study's queue wait runs from its ``202`` to the first reading that finds it running, its
run time from there to ``done``. Throughput is the number of studies over the time from the first
post to the last study done. Written to ``--output`` as JSON; a table is printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
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


def follow(database_url: str, posted: dict[str, float], timeout: float) -> dict[str, dict[str, float]]:
    """When each study was first seen running and done (``time.perf_counter()``), read from its row."""
    from app.db import Database, Study

    database = Database(database_url)
    seen: dict[str, dict[str, float]] = {study_id: {} for study_id in posted}
    deadline = time.monotonic() + timeout
    try:
        while any("done" not in times for times in seen.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Studies still unfinished after {timeout} s: {seen}")
            with database.session() as session:
                rows = session.execute(
                    select(Study.id, Study.status, Study.failure).where(Study.id.in_(list(posted)))
                ).all()
            now = time.perf_counter()
            for study_id, status, failure in rows:
                if status == "failed":
                    raise RuntimeError(f"Study {study_id} failed: {failure}")
                if status in ("running", "done"):
                    seen[study_id].setdefault("running", now)
                if status == "done":
                    seen[study_id].setdefault("done", now)
            time.sleep(POLL_SECONDS)
    finally:
        database.dispose()
    return seen


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
                    warmup = {post_study(client, series): time.perf_counter() for _ in range(workers)}
                    follow(database_url, warmup, timeout=600)
                    logger.info("%d workers: %d studies of %d slices", workers, studies, len(series))
                    first_post = time.perf_counter()
                    posted = {}
                    for _ in range(studies):
                        study_id = post_study(client, series)
                        posted[study_id] = time.perf_counter()
                    seen = follow(database_url, posted, timeout=1800)
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
        "elapsed_s": round(elapsed, 2),
        "studies_per_minute": round(per_minute, 2),
        "studies_per_minute_per_core": round(per_minute / cores, 2),
        "slices_per_second": round(studies * len(series) / elapsed, 1),
        "queue_wait_s": summarize([seen[study_id]["running"] - posted[study_id] for study_id in posted]),
        "run_s": summarize([seen[study_id]["done"] - seen[study_id]["running"] for study_id in posted]),
        "worker_memory_mib": memory,
    }


def format_rows(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | threads each | studies/min | per core | slices/s | queue wait median (p95) | run median (p95) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results:
        wait, run = row["queue_wait_s"], row["run_s"]
        lines.append(
            f"| {row['workers']} | {row['inference_threads_per_worker']} | {row['studies_per_minute']} | "
            f"{row['studies_per_minute_per_core']} | {row['slices_per_second']} | "
            f"{wait['median']} s ({wait['p95']} s) | {run['median']} s ({run['p95']} s) |"
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
