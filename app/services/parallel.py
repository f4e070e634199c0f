"""Work spread over the CPU's cores: one thread pool for the whole process.

:func:`parallel_map` runs a function over items on the pool, results in order, and :func:`run_all`
runs independent jobs; the slices of a request (preprocessing, outlines, PNG encoding) use them.
Image work (OpenCV, NumPy, zlib) releases the GIL, so threads use every core without the cost of
processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")
# One pool for the whole process, one thread per core: image work (OpenCV, NumPy, zlib) releases
# the GIL, so the slices of a request use every core without oversubscribing them.
_WORKERS = max(1, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def parallel_map(function: Callable[[_Item], _Result], items: Iterable[_Item]) -> list[_Result]:
    """``function`` over ``items`` on the CPU's cores, results in order; in the caller's thread
    when there is one item or one core. Never call it from inside ``function``: the pool's
    threads would wait on each other."""
    work = list(items)
    if len(work) < 2 or _WORKERS < 2:
        return [function(item) for item in work]
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ich-image")
        pool = _pool
    return list(pool.map(function, work))


def run_all(jobs: Iterable[Callable[[], _Result]]) -> list[_Result]:
    """Run independent jobs on the CPU's cores (:func:`parallel_map`); their results in order."""
    return parallel_map(lambda job: job(), jobs)
