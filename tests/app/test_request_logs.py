"""Request logs: one line per request with id, route, status and duration; no patient data."""

from __future__ import annotations

import io
import json
import logging
import uuid

import pydicom
import pytest
from fastapi.testclient import TestClient

from app.core.logs import JsonFormatter, make_formatter

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-314159"


def dicom_with_patient(dicom_bytes: bytes) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes))
    dataset.PatientName = PATIENT_NAME
    dataset.PatientID = PATIENT_ID
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def raw_uids(dicom_bytes: bytes) -> list[str]:
    """The instance UIDs of the test DICOM: not valid UIDs, so pydicom's warnings would quote them."""
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes), stop_before_pixels=True)
    return [str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID), str(dataset.SOPInstanceUID)]


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "app.requests"]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as both formats would write it, extra fields included."""
    text = make_formatter("text")
    structured = JsonFormatter()
    return "\n".join(text.format(record) + structured.format(record) for record in caplog.records)


def test_one_line_per_request_with_route_template(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(uuid.uuid4())
    with caplog.at_level(logging.INFO):
        response = client.get(f"/api/v1/predictions/{missing}")
    assert response.status_code == 404
    (line,) = request_lines(caplog)
    assert line.route == "/api/v1/predictions/{prediction_id}"  # type: ignore[attr-defined]
    assert line.method == "GET" and line.status == 404  # type: ignore[attr-defined]
    assert line.duration_ms >= 0.0  # type: ignore[attr-defined]
    assert line.request_id == response.headers["X-Request-ID"]  # type: ignore[attr-defined]
    assert missing not in line.getMessage()
    uuid.UUID(response.headers["X-Request-ID"])


def test_request_id_from_the_caller_is_kept_only_when_sane(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        kept = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a9c.42"})
        replaced = client.get("/healthz", headers={"X-Request-ID": "Doe Jane <script>"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a9c.42"
    assert replaced.headers["X-Request-ID"] != "Doe Jane <script>"
    uuid.UUID(replaced.headers["X-Request-ID"])
    assert [line.request_id for line in request_lines(caplog)] == [  # type: ignore[attr-defined]
        "lb-7f3a9c.42",
        replaced.headers["X-Request-ID"],
    ]
    assert "Doe Jane" not in everything_logged(caplog)


def test_patient_name_and_id_never_reach_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture, dicom_bytes: bytes
) -> None:
    with caplog.at_level(logging.DEBUG):
        created = client.post(
            "/api/v1/predictions", files={"file": ("Doe_Jane.dcm", dicom_with_patient(dicom_bytes))}
        )
        assert created.status_code == 201, created.text
        assert created.json()["study"]["patient_name"] == PATIENT_NAME
        form = client.post(
            "/api/v1/predictions",
            files={"file": ("slice.dcm", dicom_bytes)},
            data={"patient_name": PATIENT_NAME, "patient_id": PATIENT_ID},
        )
        assert form.status_code == 201
        search = client.get("/api/v1/predictions", params={"patient_id": PATIENT_ID})
        assert search.json()["total"] == 2
        refused = client.post(
            "/api/v1/predictions", files={"file": ("x.dcm", b"not an image")}, data={"patient_id": PATIENT_ID}
        )
        assert refused.status_code in (400, 415)
    logged = everything_logged(caplog)
    for secret in (PATIENT_NAME, "Doe", "Jane", PATIENT_ID, "314159", *raw_uids(dicom_bytes)):
        assert secret not in logged
    routes = [(line.method, line.route, line.status) for line in request_lines(caplog)]  # type: ignore[attr-defined]
    assert routes == [
        ("POST", "/api/v1/predictions", 201),
        ("POST", "/api/v1/predictions", 201),
        ("GET", "/api/v1/predictions", 200),
        ("POST", "/api/v1/predictions", refused.status_code),
    ]


def test_json_lines_carry_the_request_fields() -> None:
    record = logging.LogRecord("app.requests", logging.INFO, __file__, 1, "GET %s", ("/healthz",), None)
    record.request_id = "abc123"
    record.route = "/healthz"
    record.status = 200
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "GET /healthz"
    assert entry["level"] == "INFO" and entry["logger"] == "app.requests"
    assert entry["request_id"] == "abc123" and entry["route"] == "/healthz" and entry["status"] == 200
    assert entry["time"].endswith("+00:00")


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text' or 'json"):
        make_formatter("xml")  # type: ignore[arg-type]
