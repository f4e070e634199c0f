"""Run the service as a real uvicorn process on a loopback port (the benchmark and the tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChildProcess:
    """A program started by this process, its output in ``log_path``: read its log, stop or kill it."""

    process: subprocess.Popen[bytes] | None
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: it dies in the middle of whatever it does."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class ServiceProcess(ChildProcess):
    """``python -m app`` (or ``command``) in ``cwd`` with ``ICH_*`` settings; waits for /readyz 200."""

    def __init__(
        self,
        env: dict[str, str],
        startup_timeout: float = 120.0,
        command: list[str] | None = None,
        cwd: Path = PROJECT_ROOT,
    ) -> None:
        self.command = command or [sys.executable, "-m", "app"]
        self.cwd = cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # As `make run` and the container start it: two malloc arenas (docs/performance.md).
        self.env = {
            "MALLOC_ARENA_MAX": "2",
            **os.environ,
            **env,
            "ICH_HOST": "127.0.0.1",
            "ICH_PORT": str(self.port),
        }
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(env.get("ICH_DATA_DIR", "/tmp")) / f"server-{self.port}.log"

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The service exited during start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"The service was not ready within {self.startup_timeout} s:\n{self.log()}")

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
