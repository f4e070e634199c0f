"""``python -m app.worker``: a worker process of the study job queue (Celery with Redis).

It reads the same settings as the service (``ICH_JOB_QUEUE_URL`` must be set), opens the same
database and storage, loads the same models, and runs one study job at a time with the same
attempt code as the service's own threads (``app.services.jobs.runner``). At start and then periodically
it takes up the jobs of processes that are gone, exactly as the service does. With the PACS
watcher on (``ICH_DICOMWEB_POLL_SECONDS``), the workers take turns to poll the PACS and queue each
new study once. Run as many as the machines have cores to spare: ``python -m app.worker`` each, or
``docker compose up --scale worker=4``. ``celery -A app.worker:celery_app worker`` starts the same
worker; extra arguments are passed to Celery (``python -m app.worker --loglevel DEBUG``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.signals import worker_init, worker_shutdown

from app.core.config import get_settings
from app.services.queue import (
    ANALYSE_TASK,
    JobQueue,
    PollTurn,
    RedisJobMetrics,
    SharedSizes,
    make_celery,
)

if TYPE_CHECKING:
    from app.db import Database
    from app.services.jobs import StudyJobs
    from app.services.pacs import StudyWatcher

logger = logging.getLogger("app.worker")

settings = get_settings()
# Without ICH_JOB_QUEUE_URL the module still imports (the worker refuses to start in main()).
celery_app = make_celery(
    settings.job_queue_url or "redis://127.0.0.1:6379/0", settings.analysis_claim_timeout_seconds
)


@dataclass
class WorkerServices:
    """What a worker process holds while it runs."""

    database: Database
    queue: JobQueue
    jobs: StudyJobs
    watcher: StudyWatcher | None

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.jobs.stop()
        self.queue.close()
        self.database.dispose()


_services: WorkerServices | None = None


def start_services() -> WorkerServices:
    """Open the database and storage, load the models, take up jobs left by stopped processes,
    and start the PACS watcher when it is on."""
    # Imported here, not with the module: Celery's command line (its ping, for the healthcheck)
    # imports this module without loading TensorFlow.
    from app.db import Study
    from app.main import build_study_services, load_models, open_storage, prepare_process
    from app.services.pacs import StudyWatcher

    global _services
    if _services is not None:
        return _services
    if not settings.job_queue_url:
        raise RuntimeError("ICH_JOB_QUEUE_URL is not set.")
    prepare_process(settings)
    database, files = open_storage(settings)
    registry = load_models(settings)
    queue = JobQueue(settings.job_queue_url, visibility_timeout=settings.analysis_claim_timeout_seconds)
    _studies, pacs, jobs = build_study_services(
        settings, database, files, registry, None, RedisJobMetrics(queue.redis), send=queue.send
    )
    jobs.start()
    watcher = None
    if settings.dicomweb_url and settings.dicomweb_poll_seconds > 0:

        def enqueue(study_instance_uid: str) -> str | None:
            queued = jobs.enqueue_dicomweb(study_instance_uid)
            return queued.id if isinstance(queued, Study) else None

        watcher = StudyWatcher(
            pacs,
            settings.dicomweb_poll_seconds,
            settings.dicomweb_poll_lookback_days,
            enqueue=enqueue,
            turn=PollTurn(queue.redis, jobs.process, settings.dicomweb_poll_seconds),
            sizes=SharedSizes(queue.redis),
        )
        watcher.start()
        logger.info("Watching the PACS for new CT studies every %g s.", settings.dicomweb_poll_seconds)
    _services = WorkerServices(database, queue, jobs, watcher)
    logger.info(
        "Study job worker ready (process %s): models %s",
        jobs.process,
        [f"{m['name']}/{m['version']}" for m in registry.describe()],
    )
    return _services


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    # One job per process: the solo pool runs the tasks in this process, so the models are loaded
    # here, once. A pool of forked children would fork TensorFlow's threads with them.
    pool = getattr(sender, "pool_cls", "solo")
    name = pool if isinstance(pool, str) else f"{pool.__module__}.{pool.__name__}"
    if sender is not None and "solo" not in name:
        logger.warning(
            "A worker runs one study job at a time in its own process; ignoring the %s pool. Start "
            "more worker processes for more jobs at once.",
            name,
        )
        sender.pool_cls = "solo"
    if sender is not None:
        sender.concurrency = 1
    start_services()


@worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    global _services
    if _services is not None:
        _services.stop()
        _services = None


@celery_app.task(name=ANALYSE_TASK, acks_late=True, reject_on_worker_lost=True)
def analyse_study(study_id: str) -> None:
    """Run one study job (its row in the database says what and how far)."""
    start_services().jobs.run_delivered(study_id)


def main(argv: list[str] | None = None) -> None:
    if not settings.job_queue_url:
        raise SystemExit(
            "The study job worker did not start: set ICH_JOB_QUEUE_URL to the Redis of the job queue "
            "(e.g. redis://127.0.0.1:6379/0), the same as the service's."
        )
    arguments = sys.argv[1:] if argv is None else argv
    celery_app.worker_main(
        [
            "worker",
            "--pool=solo",
            "--concurrency=1",
            f"--loglevel={settings.log_level}",
            f"--hostname=ich-{os.getpid()}@{socket.gethostname()}",
            # No chatter between workers: each one only needs the queue.
            "--without-gossip",
            "--without-mingle",
            *arguments,
        ]
    )


if __name__ == "__main__":
    main()
