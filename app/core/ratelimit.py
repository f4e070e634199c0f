"""Rate limits for the upload endpoints: token buckets per API key and per client address.

Each bucket holds up to ``burst`` tokens and refills at ``per_minute / 60`` tokens a second;
an upload takes one token from its key's bucket and one from its address's bucket, and is
refused with 429 when either is empty. The buckets live in the process: with several uvicorn
workers or replicas each one counts on its own, so the effective limit is that many times
higher (a shared store such as Redis would be needed for one global count).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.core.errors import ServiceError

# Above this many buckets, those that have refilled completely (idle callers) are dropped.
MAX_TRACKED = 10_000


class RateLimited(ServiceError):
    """Too many uploads; ``retry_after`` is how many seconds until one more is allowed."""

    status_code = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by strings such as ``key:ich_abc123`` and ``ip:127.0.0.1``."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 0 or burst < 1:
            raise ValueError(
                f"per_minute must be >= 0 and burst >= 1, got {per_minute} and {burst}; "
                "per_minute 0 turns limiting off."
            )
        self.per_minute = per_minute
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _refilled(self, name: str, now: float) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(tokens=float(self.burst), updated=now)
        else:
            rate = self.per_minute / 60.0
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        return bucket

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) <= MAX_TRACKED:
            return
        rate = self.per_minute / 60.0
        idle = [
            name
            for name, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.updated) * rate >= self.burst
        ]
        for name in idle:
            del self._buckets[name]

    def acquire(self, *names: str) -> None:
        """Take one token from each named bucket, or none and raise :class:`RateLimited`."""
        if not self.enabled:
            return
        with self._lock:
            now = self.clock()
            self._forget_idle(now)
            buckets = [(name, self._refilled(name, now)) for name in names]
            empty = [(name, bucket) for name, bucket in buckets if bucket.tokens < 1.0]
            if empty:
                rate = self.per_minute / 60.0
                wait = max((1.0 - bucket.tokens) / rate for _, bucket in empty)
                retry_after = max(1, math.ceil(wait))
                scope = " and ".join(
                    "this API key" if name.startswith("key:") else "this address" for name, _ in empty
                )
                raise RateLimited(
                    f"Too many uploads from {scope}: the limit is {self.per_minute:g} a minute "
                    f"(bursts of {self.burst}). Try again in {retry_after} s.",
                    retry_after,
                )
            for _, bucket in buckets:
                bucket.tokens -= 1.0
