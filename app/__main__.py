"""``python -m app``: serve with uvicorn on the configured address and worker count.

This is also the container's command. Before the workers start, the parent process upgrades
the database schema and creates the first API key, so several workers never race to do either.
"""

from __future__ import annotations

import logging.config
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from app.core.config import get_settings
from app.core.errors import InvalidSettings
from app.core.logs import uvicorn_log_config
from app.core.metrics import MULTIPROCESS_ENV
from app.core.startup import prepare

# uvicorn finishes open requests for this long after SIGTERM; container stop periods exceed it.
GRACEFUL_SHUTDOWN_SECONDS = 30


def metrics_directory(workers: int) -> Path | None:
    """With several workers, a fresh folder where each writes its metrics (``/metrics`` sums them)."""
    if workers < 2:
        return None
    configured = os.environ.get(MULTIPROCESS_ENV)
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        # Values left by an earlier run would be added to this run's.
        for stale in folder.glob("*.db"):
            stale.unlink()
        return None
    folder = Path(tempfile.mkdtemp(prefix="ich-metrics-"))
    os.environ[MULTIPROCESS_ENV] = str(folder)
    return folder


def main() -> None:
    settings = get_settings()
    log_config = uvicorn_log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(log_config)
    try:
        prepare(settings)
    except InvalidSettings as exc:
        raise SystemExit(f"ICH Detect did not start: {exc}") from exc
    created_metrics_dir = metrics_directory(settings.workers)
    try:
        uvicorn.run(
            "app.main:app",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level.lower(),
            log_config=log_config,
            # The request log (app.requests) replaces the access log, which would show raw paths
            # and query strings, where identifiers can appear.
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    finally:
        if created_metrics_dir is not None:
            shutil.rmtree(created_metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
