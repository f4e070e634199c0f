"""The job queue's processes for its tests: the benchmark's Redis, and workers that can be slowed
down (``tests.support.slow_worker``) so that a test catches a job running."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.job_queue import RedisServer
from bench.job_queue import WorkerProcess as PlainWorker

__all__ = ["RedisServer", "WorkerProcess"]


class WorkerProcess(PlainWorker):
    """A study job worker whose batches of two slices each take ``batch_seconds`` longer, and that
    writes ``<pid> <study id>`` to ``runs_log`` each time it starts analysing a study."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, batch_seconds: float = 0.0, runs_log: Path | None = None
    ) -> None:
        command = [sys.executable, "-m", "tests.support.slow_worker", str(batch_seconds), str(runs_log or "")]
        super().__init__(env, log_dir, command)
