"""The job queue's processes for the benchmark and the tests: a throw-away Redis (Debian's
``redis-server``) on a loopback port, and study job workers (``python -m app.worker``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from bench.service import PROJECT_ROOT, ChildProcess, free_port


class RedisServer:
    """Context manager: redis-server on 127.0.0.1 with a temporary folder, no persistence."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run 'make system-deps' (Debian package redis-server)."
            )
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="ich-redis-"))
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        command = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.root),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        log = (self.root / "redis.log").open("wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError as exc:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        log_text = (self.root / "redis.log").read_text()
                        raise RuntimeError(f"redis-server did not start: {log_text}") from exc
                    time.sleep(0.1)
        finally:
            client.close()

    def flush(self) -> None:
        """Forget every queued task and counted metric."""
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if self.process is not None:
                self.process.terminate()
                self.process.wait(timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class WorkerProcess(ChildProcess):
    """One study job worker with ``ICH_*`` settings ``env``; its output goes to a log in ``log_dir``."""

    def __init__(self, env: dict[str, str], log_dir: Path, command: list[str] | None = None) -> None:
        self.env = {"MALLOC_ARENA_MAX": "2", **os.environ, **env, "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.command = command or [sys.executable, "-m", "app.worker"]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("The worker has not been started.")
        return self.process.pid

    def launch(self) -> WorkerProcess:
        """Start the process without waiting for it (see ``wait_ready``)."""
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def wait_ready(self, timeout: float = 180.0) -> WorkerProcess:
        """Wait until the worker has loaded its models and listens to the queue (Celery's "ready.")."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"The worker exited during start-up:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"The worker was not ready within {timeout} s:\n{self.log()}")

    def start(self, timeout: float = 180.0) -> WorkerProcess:
        return self.launch().wait_ready(timeout)
