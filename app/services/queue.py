"""The study job queue on Celery with Redis, when ``ICH_JOB_QUEUE_URL`` is set.

The service's processes send each queued job as a task that names only the study's id; worker
processes (``python -m app.worker``) take one task at a time and run the same attempt code as the
embedded thread pool (``app.services.jobs.runner``). The database row stays the record of a job's status
and progress: a task whose row is already running or done does nothing, so a message delivered
twice (Redis hands an unacknowledged one out again, or the recovery sent it again) is harmless.

Tasks are acknowledged once they end (``acks_late``), and handed back to the queue when the
process running them dies (``reject_on_worker_lost``); each worker reserves one task at a time.
The metrics of the jobs, which run in the workers, are kept in Redis so that every process's
``/metrics`` shows the same queue length, job durations and failures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import cast

import redis
from celery import Celery
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from app.core.metrics import STUDY_JOB_BUCKETS

logger = logging.getLogger(__name__)

# The Redis list the tasks wait in, and the names of the tasks the workers run.
QUEUE = "ich-studies"
ANALYSE_TASK = "ich.analyse_study"
POLL_TASK = "ich.poll_pacs"
# Redis keys of the job metrics, and of the lock that lets one process poll the PACS at a time.
METRICS_KEY = "ich:study-jobs:metrics"
POLL_LOCK_KEY = "ich:pacs-watcher:lock"
WATCHER_SIZES_KEY = "ich:pacs-watcher:sizes"
OUTCOMES = ("done", "failed")


def make_celery(url: str, visibility_timeout: float) -> Celery:
    """A Celery application on the Redis at ``url``, configured so that no task is lost.

    ``visibility_timeout``: how long Redis waits before handing out again a task whose worker
    neither acknowledged nor returned it (the worker died with it); the jobs' own recovery usually
    sends such a job again sooner.
    """
    celery = Celery("ich", broker=url, set_as_current=False)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # One job at a time per worker process: TensorFlow already spreads one analysis over the
        # cores, and a job killed with its process is the only one lost with it.
        worker_pool="solo",
        worker_concurrency=1,
        task_default_queue=QUEUE,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility_timeout},
        # A request that queues a study does not hang while Redis is away: the job stays queued in
        # the database and the recovery sends it again.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    )
    return celery


class JobQueue:
    """The sending side of the queue, used by the service's processes (and the workers' recovery)."""

    def __init__(self, url: str, visibility_timeout: float) -> None:
        self.url = url
        self.celery = make_celery(url, visibility_timeout)
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def send(self, study_id: str) -> bool:
        """Send a job to the workers; False (logged) when Redis cannot be reached."""
        try:
            self.celery.send_task(ANALYSE_TASK, args=[study_id], queue=QUEUE)
        except Exception as exc:
            logger.error(
                "Could not send study job %s to the queue (%s); it stays queued and is sent again by "
                "the recovery.",
                study_id[:8],
                type(exc).__name__,
            )
            return False
        return True

    def length(self) -> int:
        """Tasks waiting in the queue (not those a worker holds)."""
        return cast(int, self.redis.llen(QUEUE))

    def close(self) -> None:
        self.redis.close()
        self.celery.close()


class RedisJobMetrics:
    """The job metrics of the worker processes, counted in Redis (one hash for every process)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def job_queued(self, change: int) -> None:
        """The queue length is Redis's own list: nothing to count."""

    def observe_study_job(self, outcome: str, seconds: float) -> None:
        fields = [f"{outcome}:count", *(f"{outcome}:le:{le}" for le in STUDY_JOB_BUCKETS if seconds <= le)]
        try:
            with self.redis.pipeline() as pipe:
                for name in fields:
                    pipe.hincrby(METRICS_KEY, name, 1)
                pipe.hincrbyfloat(METRICS_KEY, f"{outcome}:sum", seconds)
                pipe.execute()
        except redis.RedisError as exc:
            logger.warning("Could not record a study job's duration in Redis (%s)", type(exc).__name__)

    def count_study_job_failure(self) -> None:
        try:
            self.redis.hincrby(METRICS_KEY, "failures", 1)
        except redis.RedisError as exc:
            logger.warning("Could not count a study job's failure in Redis (%s)", type(exc).__name__)


class QueueCollector(Collector):
    """``ich_study_jobs_queued``, ``ich_study_job_duration_seconds`` and ``ich_study_job_failures_total``
    read from Redis at each scrape, for the ``/metrics`` of every process."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily | CounterMetricFamily]:
        try:
            waiting = self.queue.length()
            raw = cast(dict[bytes, bytes], self.queue.redis.hgetall(METRICS_KEY))
        except redis.RedisError as exc:
            logger.warning("Could not read the job queue's metrics from Redis (%s)", type(exc).__name__)
            return
        values = {key.decode(): float(value) for key, value in raw.items()}
        yield GaugeMetricFamily(
            "ich_study_jobs_queued", "Study jobs waiting in the queue for a worker.", value=waiting
        )
        durations = HistogramMetricFamily(
            "ich_study_job_duration_seconds",
            "Time of one attempt at a study job, from its start on a worker to done or failed.",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            count = values.get(f"{outcome}:count", 0.0)
            buckets = [(str(le), values.get(f"{outcome}:le:{le}", 0.0)) for le in STUDY_JOB_BUCKETS]
            durations.add_metric(
                [outcome], [*buckets, ("+Inf", count)], sum_value=values.get(f"{outcome}:sum", 0.0)
            )
        yield durations
        yield CounterMetricFamily(
            "ich_study_job_failures",
            "Study jobs that ended failed (an error, or given up after their last attempt).",
            value=values.get("failures", 0.0),
        )


class PollTurn:
    """Whether this process polls the PACS now: the one that sets a lock in Redis for (most of)
    the interval, so that however many workers run, the PACS is polled once per interval."""

    def __init__(self, client: redis.Redis, owner: str, interval_seconds: float) -> None:
        self.redis = client
        self.owner = owner
        self.hold_ms = max(1, int(interval_seconds * 900))

    def __call__(self) -> bool:
        try:
            return bool(self.redis.set(POLL_LOCK_KEY, self.owner, nx=True, px=self.hold_ms))
        except redis.RedisError as exc:
            logger.warning("Could not reach Redis to take the PACS watcher's turn (%s)", type(exc).__name__)
            return False


class SharedSizes(MutableMapping[str, int | None]):
    """What the last poll of the PACS saw (instances of each waiting study), kept in Redis so that
    the next poll, by whichever worker, sees it."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def __getitem__(self, uid: str) -> int | None:
        value = cast(bytes | None, self.redis.hget(WATCHER_SIZES_KEY, uid))
        if value is None:
            raise KeyError(uid)
        return int(value) if value else None

    def __setitem__(self, uid: str, size: int | None) -> None:
        self.redis.hset(WATCHER_SIZES_KEY, uid, "" if size is None else str(size))

    def __delitem__(self, uid: str) -> None:
        if not self.redis.hdel(WATCHER_SIZES_KEY, uid):
            raise KeyError(uid)

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in cast(list[bytes], self.redis.hkeys(WATCHER_SIZES_KEY)))

    def __len__(self) -> int:
        return cast(int, self.redis.hlen(WATCHER_SIZES_KEY))
