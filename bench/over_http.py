"""Timings over HTTP against the real server: single slices, PDF reports, concurrency, studies, memory.

One slice is sent twice over: with ``segment=false`` as a form field (classification and Grad-CAM
only, the path the issue's single-slice targets are defined for) and, when ``/readyz`` names a
segmentation model, as a default request that is also segmented. Everything else (PDF reports,
throughput, memory, start-up, the study endpoint) uses the server's default configuration.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.client import PREDICTIONS_PATH, STUDIES_PATH, HttpBench, new_api_key
from bench.config import BenchConfig
from bench.inputs import build_dicom_series, pick_slice_png
from bench.machine import malloc_environment, rss_mib
from bench.stats import elapsed_ms, summarize

logger = logging.getLogger("bench")

__all__ = [
    "measure_http_single",
    "measure_memory",
    "measure_pdf",
    "measure_study_http",
    "measure_throughput",
    "run_http",
    "served_models",
]


def measure_http_single(
    bench: HttpBench, png: bytes, config: BenchConfig, segment: bool | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Sequential single-slice requests: client latency and the server's own stage timings.

    ``segment=False`` sends the form field that skips segmentation; ``None`` sends the default
    request. A request that skips segmentation and still comes back segmented is an error.
    """
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    overhead: list[float] = []
    ids: list[str] = []
    segmented = 0
    with bench.client() as client:
        for _ in range(config.warmup):
            bench.post_slice(client, png, segment)
        for _ in range(config.requests):
            elapsed, body = bench.post_slice(client, png, segment)
            latencies.append(elapsed)
            ids.append(str(body["id"]))
            segmented += body.get("segmentation") is not None
            timings = body.get("timings_ms", {})
            for name, value in timings.items():
                stages.setdefault(name, []).append(float(value))
            if "total" in timings:
                overhead.append(elapsed - float(timings["total"]))
    if segment is False and (segmented or "segmentation" in stages):
        raise RuntimeError(f"POST {PREDICTIONS_PATH} with segment=false still segmented the slice.")
    result: dict[str, Any] = {
        "request": "default" if segment is None else f"segment={str(segment).lower()} (form field)",
        "segmented_responses": segmented,
        "end_to_end_ms": summarize(latencies),
        "server_stages_ms": {name: summarize(values) for name, values in stages.items()},
    }
    if overhead:
        result["outside_stages_ms"] = summarize(overhead)
    return result, ids


def measure_pdf(bench: HttpBench, prediction_ids: list[str]) -> dict[str, Any] | None:
    """First GET of report.pdf for distinct predictions: the lazily generated report."""
    if not prediction_ids:
        return None
    timings = []
    with bench.client() as client:
        for prediction_id in prediction_ids:
            started = time.perf_counter()
            response = client.get(f"{PREDICTIONS_PATH}/{prediction_id}/report.pdf")
            timings.append(elapsed_ms(started))
            if response.status_code != 200 or not response.content.startswith(b"%PDF"):
                raise RuntimeError(f"report.pdf of {prediction_id} answered {response.status_code}.")
    return summarize(timings)


def measure_throughput(
    bench: HttpBench, png: bytes, clients: int, requests_per_client: int
) -> dict[str, Any]:
    """``clients`` threads, each with its own connection, send a fixed number of slices at once."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        try:
            with bench.client() as client:
                barrier.wait()
                for _ in range(requests_per_client):
                    latencies[index].append(bench.post_slice(client, png)[0])
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"A throughput client failed: {errors[0]!r}") from errors[0]
    total = clients * requests_per_client
    return {
        "clients": clients,
        "requests": total,
        "seconds": round(elapsed, 3),
        "requests_per_second": round(total / elapsed, 2),
        "latency_ms": summarize([value for values in latencies for value in values]),
    }


def measure_study_http(bench: HttpBench, series: list[bytes], config: BenchConfig) -> dict[str, Any]:
    """The series through ``POST /api/v1/studies`` when the service has it; otherwise why not."""
    with bench.client() as client:
        if not bench.study_endpoint_available(client):
            return {"available": False, "reason": f"POST {STUDIES_PATH} is not in /openapi.json"}
        _, status = bench.post_study(client, series)
        if status >= 400:
            return {"available": False, "reason": f"POST {STUDIES_PATH} answered {status}"}
        timings = []
        for _ in range(config.study_repeats):
            elapsed, status = bench.post_study(client, series)
            if status >= 400:
                raise RuntimeError(f"POST {STUDIES_PATH} answered {status}.")
            timings.append(elapsed)
    stats = summarize(timings)
    return {
        "available": True,
        "status_code": status,
        "num_slices": len(series),
        "end_to_end_ms": stats,
        "slices_per_second": round(len(series) / (stats["median"] / 1000.0), 2),
    }


def run_http(config: BenchConfig) -> dict[str, Any]:
    """Start-up, single slices, PDF reports, concurrency, the study endpoint and memory, over HTTP."""
    png = pick_slice_png(config.data_dir).read_bytes()
    series = build_dicom_series(config.data_dir, config.series_slices)
    work_dir = Path(tempfile.mkdtemp(prefix="ich-bench-"))
    try:
        start_seconds: list[float] = []
        for run_index in range(config.start_runs - 1):
            logger.info("HTTP: start-up %d of %d", run_index + 1, config.start_runs)
            bench = HttpBench(
                config.model_store, work_dir / f"start-{run_index}", new_api_key(), config.model_name
            )
            try:
                start_seconds.append(bench.start())
            finally:
                bench.stop()
        bench = HttpBench(config.model_store, work_dir / "main", new_api_key(), config.model_name)
        logger.info("HTTP: start-up %d of %d (the measured server)", config.start_runs, config.start_runs)
        start_seconds.append(bench.start())
        try:
            memory_samples = [{"requests": 0, "after": "start", **rss_mib(bench.pid)}]
            serving = served_models(bench)
            segmentation_model = (serving or {}).get("segmentation")
            logger.info("HTTP: %d single-slice requests, segment=false", config.requests)
            single, ids = measure_http_single(bench, png, config, segment=False)
            memory_samples.append(
                {"requests": bench.posted, "after": "single slices, segment=false", **rss_mib(bench.pid)}
            )
            segmented: dict[str, Any] | None = None
            if segmentation_model:
                logger.info("HTTP: %d single-slice requests with segmentation", config.requests)
                segmented, ids = measure_http_single(bench, png, config)
                segmented["model"] = segmentation_model
                memory_samples.append(
                    {"requests": bench.posted, "after": "single slices, segmented", **rss_mib(bench.pid)}
                )
            settled_index = len(memory_samples) - 1
            logger.info("HTTP: %d PDF reports", min(config.pdf_reports, len(ids)))
            pdf = measure_pdf(bench, ids[: config.pdf_reports])
            memory_samples.append({"requests": bench.posted, "after": "PDF reports", **rss_mib(bench.pid)})
            throughput = {}
            for clients in config.concurrency:
                logger.info("HTTP: %d concurrent clients", clients)
                throughput[str(clients)] = measure_throughput(bench, png, clients, config.requests_per_client)
            memory_samples.append({"requests": bench.posted, "after": "throughput", **rss_mib(bench.pid)})
            logger.info("HTTP: memory up to %d requests", config.memory_requests)
            memory = measure_memory(bench, png, config.memory_requests, memory_samples, settled_index)
            memory["malloc_environment"] = malloc_environment(bench.pid)
            # Last, so that the series' larger batches do not enter the single-slice memory figures.
            logger.info("HTTP: study endpoint")
            study = measure_study_http(bench, series, config)
            memory["rss_after_studies_mib"] = rss_mib(bench.pid)["rss_mib"]
        finally:
            bench.stop()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {
        "segmentation_model": segmentation_model,
        "single_slice": single,
        "single_slice_with_segmentation": segmented,
        "pdf_ms": pdf,
        "throughput": throughput,
        "study": study,
        "start_to_ready_s": {
            **summarize(start_seconds),
            "runs": [round(value, 3) for value in start_seconds],
        },
        "memory": memory,
        "served_models": serving,
    }


def served_models(bench: HttpBench) -> dict[str, Any] | None:
    """The models the server reports on ``/readyz`` (classifier, and segmentation when one runs)."""
    with bench.client() as client:
        models = client.get("/readyz").json().get("models")
    return models if isinstance(models, dict) else None


def measure_memory(
    bench: HttpBench,
    png: bytes,
    total_requests: int,
    samples: list[dict[str, Any]],
    settled_index: int = 1,
) -> dict[str, Any]:
    """Send slices until the server has answered ``total_requests``; its resident memory on the way.

    ``samples`` starts with the reading right after start-up (and any taken between phases).
    Growth is reported from that first reading, and from ``samples[settled_index]`` (the reading
    after the single-slice phases), when the allocators and lazily imported libraries have settled.
    """
    step = max(1, total_requests // 5)
    with bench.client() as client:
        while bench.posted < total_requests:
            bench.post_slice(client, png)
            if bench.posted % step == 0:
                samples.append(
                    {"requests": bench.posted, "after": "more single slices", **rss_mib(bench.pid)}
                )
    final: dict[str, Any] = {"requests": bench.posted, "after": "all requests", **rss_mib(bench.pid)}
    if samples[-1]["requests"] == final["requests"]:
        samples[-1] = final
    else:
        samples.append(final)
    after_start = float(samples[0]["rss_mib"])
    after_all = float(final["rss_mib"])
    settled = samples[settled_index] if 0 < settled_index < len(samples) else final
    settled_rss = float(settled["rss_mib"])
    return {
        "rss_after_start_mib": after_start,
        "rss_after_requests_mib": after_all,
        "peak_rss_mib": final["peak_rss_mib"],
        "requests": final["requests"],
        "growth_percent": round(100.0 * (after_all - after_start) / after_start, 2),
        "settled_after_requests": settled["requests"],
        "growth_after_settling_percent": round(100.0 * (after_all - settled_rss) / settled_rss, 2),
        "samples": samples,
    }
