"""Start a throw-away Orthanc (Debian's packages ``orthanc`` and ``orthanc-dicomweb``) on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.postgres import free_port

PLUGIN_FOLDERS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def orthanc_binary() -> Path:
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    if found is None:
        raise RuntimeError("Orthanc is not installed: run 'make system-deps' (Debian package orthanc).")
    return Path(found)


def dicomweb_plugin() -> Path:
    for folder in PLUGIN_FOLDERS:
        plugins = sorted(folder.glob("libOrthancDicomWeb.so*"))
        if plugins:
            return plugins[0]
    raise RuntimeError(
        "The Orthanc DICOMweb plugin is not installed: run 'make system-deps' (Debian package orthanc-dicomweb)."
    )


class OrthancServer:
    """Context manager: Orthanc with DICOMweb on free loopback ports, its files in a temporary folder."""

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ich-orthanc-"))
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "orthanc.log"

    def _write_config(self) -> Path:
        config = {
            "Name": "ich-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ICHTEST",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            # Orthanc cannot bind to loopback only: accept no DICOM request from unknown peers.
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowMove": False,
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> OrthancServer:
        config = self._write_config()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(orthanc_binary()), str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited during start-up:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"Orthanc was not ready within {self.startup_timeout} s:\n{self.log()}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
