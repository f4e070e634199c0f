"""``python -m tests.support.slow_worker BATCH_SECONDS RUNS_LOG [celery arguments]``: the study job
worker (``app.worker``) analysing two slices per batch, each batch taking at least BATCH_SECONDS
longer, and writing one line ``<pid> <study id>`` to RUNS_LOG each time it starts analysing a study.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def main() -> None:
    batch_seconds = float(sys.argv[1])
    runs_log = Path(sys.argv[2]) if sys.argv[2] else None

    from app.services import studies
    from app.services.analysis import AnalysisPipeline
    from app.worker import main as worker_main

    studies.BATCH_SIZE = 2
    classify_batch = AnalysisPipeline.classify_batch
    create_from_series = studies.StudyService.create_from_series

    def slow_batch(self: AnalysisPipeline, *args: Any, **kwargs: Any) -> Any:
        time.sleep(batch_seconds)
        return classify_batch(self, *args, **kwargs)

    def counted(self: studies.StudyService, *args: Any, **kwargs: Any) -> Any:
        job = kwargs.get("job")
        if runs_log is not None and job is not None:
            with runs_log.open("a") as log:
                log.write(f"{os.getpid()} {job.study_id}\n")
        return create_from_series(self, *args, **kwargs)

    AnalysisPipeline.classify_batch = slow_batch  # type: ignore[method-assign]
    studies.StudyService.create_from_series = counted  # type: ignore[method-assign]
    worker_main(sys.argv[3:])


if __name__ == "__main__":
    main()
