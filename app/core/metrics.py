"""Prometheus metrics: requests, latency, predictions, model inference time, study jobs and errors.

Each application owns its registry, so several apps in one process (tests) never share counts.
With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``python -m app`` and every
worker writes its values there; ``/metrics`` then answers with the sum over all workers. When the
study jobs run on the job queue's workers, their metrics come from the queue instead
(``app.services.queue.QueueCollector``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Request latency from a health probe (milliseconds) to a slow upload (tens of seconds).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A study job: a few slices (a second) to a 1000-slice series on a busy machine (minutes).
STUDY_JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """The service's metrics and their text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, study_jobs: Collector | None = None) -> None:
        """``study_jobs``: where the study job metrics come from when the jobs run elsewhere (the
        job queue's workers); None counts the jobs of this process."""
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_ENV) or None
        self.study_jobs = study_jobs
        # In multi-process mode values live in files; the exposition reads them from there.
        self.registry = CollectorRegistry(auto_describe=True)
        target = None if self.multiprocess_dir else self.registry
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=target,
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Time from receiving a request to the end of its response, by method and route template.",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=target,
        )
        self.predictions = Counter(
            "ich_predictions",
            "Stored predictions, by label and model.",
            ["label", "model", "version"],
            registry=target,
        )
        self.inference_seconds = Histogram(
            "ich_model_inference_seconds",
            "Model forward pass and Grad-CAM time per slice, by model.",
            ["model", "version"],
            buckets=INFERENCE_BUCKETS,
            registry=target,
        )
        # The study jobs of this process's worker threads; none when the jobs run elsewhere.
        self._study_jobs_local: tuple[Gauge, Histogram, Counter] | None = None
        if study_jobs is None:
            self._study_jobs_local = (
                Gauge(
                    "ich_study_jobs_queued",
                    "Study jobs waiting for a worker thread (summed over processes).",
                    registry=target,
                    multiprocess_mode="livesum",
                ),
                Histogram(
                    "ich_study_job_duration_seconds",
                    "Time of one attempt at a study job, from its start on a worker to done or failed.",
                    ["outcome"],
                    buckets=STUDY_JOB_BUCKETS,
                    registry=target,
                ),
                Counter(
                    "ich_study_job_failures",
                    "Study jobs that ended failed (an error, or given up after their last attempt).",
                    registry=target,
                ),
            )
        else:
            self.registry.register(study_jobs)
        self.errors = Counter(
            "ich_errors",
            "Errors by type: the service error class, or the exception class when unhandled.",
            ["type"],
            registry=target,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        self.request_duration.labels(method=method, route=route).observe(seconds)

    def observe_inference(self, model: str, version: str, seconds: float) -> None:
        self.inference_seconds.labels(model=model, version=version).observe(seconds)

    def count_prediction(self, label: str, model: str, version: str) -> None:
        self.predictions.labels(label=label, model=model, version=version).inc()

    def job_queued(self, change: int) -> None:
        """A job handed to this process's worker threads (+1), or taken by one (-1)."""
        if self._study_jobs_local is not None:
            self._study_jobs_local[0].inc(change)

    def observe_study_job(self, outcome: str, seconds: float) -> None:
        if self._study_jobs_local is not None:
            self._study_jobs_local[1].labels(outcome=outcome).observe(seconds)

    def count_study_job_failure(self) -> None:
        if self._study_jobs_local is not None:
            self._study_jobs_local[2].inc()

    def count_error(self, error_type: str) -> None:
        self.errors.labels(type=error_type).inc()

    def render(self) -> bytes:
        """The Prometheus text format of every metric (summed over workers in multi-process mode)."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            if self.study_jobs is not None:
                registry.register(self.study_jobs)
            return generate_latest(registry)
        return generate_latest(self.registry)
