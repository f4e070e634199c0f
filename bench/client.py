"""The real service (``python -m app``) on a loopback port, and the requests the benchmark sends it."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from bench.config import DEFAULT_MODEL
from bench.service import ServiceProcess
from bench.stats import elapsed_ms

__all__ = ["PREDICTIONS_PATH", "STUDIES_PATH", "HttpBench", "new_api_key"]

STUDIES_PATH = "/api/v1/studies"
PREDICTIONS_PATH = "/api/v1/predictions"


class HttpBench:
    """The real service (``python -m app``) on a loopback port, and timed requests to it.

    Args:
        model_store: the model bundles the service loads.
        work_dir: a throw-away folder for the service's database and files.
        api_key: the key the service accepts and the clients send.
    """

    def __init__(
        self, model_store: Path, work_dir: Path, api_key: str, model_name: str = DEFAULT_MODEL
    ) -> None:
        self.work_dir = work_dir
        self.api_key = api_key
        self.env = {
            "ICH_DATA_DIR": str(work_dir / "data"),
            "ICH_DATABASE_URL": f"sqlite:///{work_dir / 'data' / 'ich.sqlite3'}",
            "ICH_MODEL_STORE": str(Path(model_store).resolve()),
            "ICH_DEFAULT_MODEL": model_name,
            "ICH_API_KEYS": api_key,
            # The benchmark is the only client and sends far more than a clinician would.
            "ICH_RATE_LIMIT_PER_MINUTE": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self.server: ServiceProcess | None = None
        self.posted = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("The service is not running; call start() first.")
        return str(self.server.url)

    @property
    def pid(self) -> int:
        if self.server is None or self.server.process is None:
            raise RuntimeError("The service is not running; call start() first.")
        return int(self.server.process.pid)

    def start(self) -> float:
        """Launch the service; seconds from launching the process to /readyz answering 200."""
        self.server = ServiceProcess(self.env, startup_timeout=180.0)
        started = time.perf_counter()
        self.server.start()
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> Any:
        import httpx

        return httpx.Client(base_url=self.url, headers=self.headers, timeout=300.0)

    def post_slice(
        self, client: Any, png: bytes, segment: bool | None = None
    ) -> tuple[float, dict[str, Any]]:
        """POST one slice; the client's milliseconds and the response body.

        ``segment`` is sent as the ``segment`` form field; ``None`` sends none (the default request).
        """
        data = None if segment is None else {"segment": "true" if segment else "false"}
        started = time.perf_counter()
        response = client.post(PREDICTIONS_PATH, files={"file": ("slice.png", png, "image/png")}, data=data)
        elapsed = elapsed_ms(started)
        self.posted += 1
        if response.status_code != 201:
            raise RuntimeError(f"POST {PREDICTIONS_PATH} answered {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        return elapsed, body

    def study_endpoint_available(self, client: Any) -> bool:
        """Whether the OpenAPI document lists ``POST /api/v1/studies``."""
        paths = client.get("/openapi.json").json().get("paths", {})
        return "post" in paths.get(STUDIES_PATH, {})

    def post_study(self, client: Any, series: list[bytes]) -> tuple[float, int]:
        """POST a whole series as multipart ``files`` and wait for its analysis (a job, up to the
        service's 120 s); the client's milliseconds and the status code."""
        files = [
            ("files", (f"slice-{index:03d}.dcm", data, "application/dicom"))
            for index, data in enumerate(series)
        ]
        started = time.perf_counter()
        response = client.post(STUDIES_PATH, params={"wait": 120}, files=files)
        return elapsed_ms(started), int(response.status_code)


def new_api_key() -> str:
    """A fresh key in the service's format, accepted through ``ICH_API_KEYS``."""
    return "ich_" + secrets.token_urlsafe(32)
