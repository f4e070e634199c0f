"""The service as a real uvicorn process, called over HTTP with real images."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import pydicom
from pypdf import PdfReader

from tests.support.server import ServiceProcess


def test_real_server_analyses_png_and_dicom(
    tmp_path: Path, model_store: Path, api_key: str, png_bytes: bytes, dicom_bytes: bytes
) -> None:
    env = {
        "ICH_DATA_DIR": str(tmp_path / "data"),
        "ICH_MODEL_STORE": str(model_store),
        "ICH_DEFAULT_MODEL": "ich-compact",
        "ICH_API_KEYS": api_key,
    }
    with ServiceProcess(env) as server:
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            png = client.post("/api/v1/predictions", files={"file": ("000.png", png_bytes, "image/png")})
            assert png.status_code == 201, png.text
            assert png.json()["image"]["format"] == "png"

            dataset = pydicom.dcmread(io.BytesIO(dicom_bytes))
            dataset.PatientName = "Server^Test"
            buffer = io.BytesIO()
            dataset.save_as(buffer)
            dicom = client.post(
                "/api/v1/predictions", files={"file": ("slice.dcm", buffer.getvalue(), "application/dicom")}
            )
            assert dicom.status_code == 201, dicom.text
            body = dicom.json()
            assert body["image"]["format"] == "dicom"
            assert body["study"]["patient_name"] == "Server^Test"

            report = client.get(body["links"]["report"])
            assert report.status_code == 200
            text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(report.content)).pages)
            assert "Server^Test" in text and "not for clinical use" in text.lower()

            listing = client.get("/api/v1/predictions").json()
            assert [item["id"] for item in listing["items"]] == [body["id"], png.json()["id"]]
            assert httpx.get(f"{server.url}/api/v1/predictions", timeout=10).status_code == 401
            assert httpx.get(f"{server.url}/docs", timeout=10).status_code == 200
    # The patient's name never reaches the log.
    assert "Server^Test" not in server.log() and "Server" not in server.log()


def test_first_start_creates_and_prints_one_key(tmp_path: Path, model_store: Path, png_bytes: bytes) -> None:
    env = {
        "ICH_DATA_DIR": str(tmp_path / "data"),
        "ICH_MODEL_STORE": str(model_store),
        "ICH_DEFAULT_MODEL": "ich-compact",
        "ICH_API_KEYS": "",
    }
    with ServiceProcess(env) as server:
        keys = re.findall(r"\bich_[A-Za-z0-9_-]{20,}", server.log())
        assert len(keys) == 1
        response = httpx.post(
            f"{server.url}/api/v1/predictions",
            files={"file": ("a.png", png_bytes)},
            headers={"Authorization": f"Bearer {keys[0]}"},
            timeout=60,
        )
        assert response.status_code == 201
    # A second start finds the stored key and prints none.
    with ServiceProcess(env) as server:
        assert re.findall(r"\bich_[A-Za-z0-9_-]{20,}", server.log()) == []
    database = (tmp_path / "data" / "ich.sqlite3").read_bytes()
    assert keys[0].encode() not in database
