"""The predictions API through FastAPI's TestClient, with a tiny model."""

from __future__ import annotations

import errno
import io
import uuid
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from app.core.config import Settings
from app.main import create_app


def post_image(client: TestClient, data: bytes, name: str = "slice.bin", **fields: str) -> object:
    return client.post("/api/v1/predictions", files={"file": (name, data)}, data=fields)


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"model": True, "database": True, "storage": True},
        # This store holds no segmentation model: the service is ready without one.
        "models": {"classification": "ich-compact/0.0.2", "segmentation": None},
    }


def test_create_prediction_from_png(client: TestClient, png_bytes: bytes) -> None:
    response = post_image(client, png_bytes, patient_name="Test Patient", patient_id="P-1")
    assert response.status_code == 201, response.text
    body = response.json()
    uuid.UUID(body["id"])
    assert 0.0 <= body["probability"] <= 1.0
    assert body["label"] == ("hemorrhage" if body["probability"] >= body["threshold"] else "no_hemorrhage")
    assert body["threshold"] == 0.5
    assert body["model"] == {"name": "ich-compact", "version": "0.0.2"}
    assert body["image"]["format"] == "png"
    assert body["study"]["patient_name"] == "Test Patient"
    assert body["study"]["patient_id"] == "P-1"
    for stage in ("decode", "preprocess", "model_and_gradcam", "storage", "total"):
        assert body["timings_ms"][stage] >= 0.0
    assert "Not for clinical use" in body["disclaimer"]
    original_shape = decode_png(png_bytes).shape[:2]
    assert (body["image"]["height"], body["image"]["width"]) == original_shape

    original = client.get(body["links"]["original"])
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert decode_png(original.content).shape[:2] == original_shape
    overlay = client.get(body["links"]["overlay"])
    assert overlay.headers["content-type"] == "image/png"
    overlay_image = decode_png(overlay.content)
    assert overlay_image.shape == (*original_shape, 3)
    heatmap_png = client.get(body["links"]["heatmap"]).content
    heatmap = decode_png(heatmap_png)
    assert heatmap.shape == original_shape and heatmap.dtype == np.uint8
    # IHDR: bit depth 8, colour type 0 (one grey channel).
    assert heatmap_png[24] == 8 and heatmap_png[25] == 0
    # Without a segmentation model the result has no outlines, and everything else is there.
    assert body["segmentation"] is None
    assert "segmentation" not in body["timings_ms"]
    assert client.get(f"{body['links']['self']}/mask.png").status_code == 404

    fetched = client.get(body["links"]["self"])
    assert fetched.status_code == 200
    assert fetched.json()["id"] == body["id"]


def test_report_pdf(client: TestClient, png_bytes: bytes) -> None:
    body = post_image(client, png_bytes, patient_name="Report Patient").json()
    report = client.get(body["links"]["report"])
    assert report.status_code == 200
    assert report.headers["content-type"] == "application/pdf"
    assert report.content.startswith(b"%PDF")
    from pypdf import PdfReader

    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(report.content)).pages)
    assert body["id"] in text
    assert "Report Patient" in text
    assert "not for clinical use" in text.lower()
    assert "ich-compact" in text and "0.0.2" in text
    # A second read returns the stored report unchanged.
    assert client.get(body["links"]["report"]).content == report.content


def test_create_prediction_from_jpeg(client: TestClient, jpeg_bytes: bytes) -> None:
    response = post_image(client, jpeg_bytes, name="slice.png")
    assert response.status_code == 201, response.text
    assert response.json()["image"]["format"] == "jpeg"


def test_dicom_attributes_fill_the_study(client: TestClient, dicom_bytes: bytes) -> None:
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes))
    dataset.PatientName = "Doe^Jane"
    dataset.StudyDescription = "CT HEAD WO CONTRAST"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    response = post_image(client, buffer.getvalue(), name="scan.jpg")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["image"] == {"format": "dicom", "width": 512, "height": 512}
    assert body["study"]["patient_name"] == "Doe^Jane"
    assert body["study"]["patient_id"] == str(dataset.PatientID)
    assert body["study"]["study_description"] == "CT HEAD WO CONTRAST"
    # Form fields take precedence over the file's attributes.
    override = post_image(client, buffer.getvalue(), patient_name="Given Name").json()
    assert override["study"]["patient_name"] == "Given Name"


def test_list_newest_first_filter_and_page(client: TestClient, png_bytes: bytes, jpeg_bytes: bytes) -> None:
    ids = [
        post_image(client, data, patient_id=f"LIST-{i}").json()["id"]
        for i, data in enumerate([png_bytes, jpeg_bytes, png_bytes])
    ]
    page = client.get("/api/v1/predictions", params={"page_size": 2}).json()
    assert page["total"] == 3 and page["page"] == 1 and len(page["items"]) == 2
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    second = client.get("/api/v1/predictions", params={"page_size": 2, "page": 2}).json()
    assert [item["id"] for item in second["items"]] == [ids[0]]
    by_patient = client.get("/api/v1/predictions", params={"patient_id": "LIST-1"}).json()
    assert [item["id"] for item in by_patient["items"]] == [ids[1]]
    for label in ("hemorrhage", "no_hemorrhage"):
        filtered = client.get("/api/v1/predictions", params={"label": label}).json()
        assert all(item["label"] == label for item in filtered["items"])
    everything = client.get("/api/v1/predictions").json()
    labels = [item["label"] for item in everything["items"]]
    positives_first = client.get("/api/v1/predictions", params={"positives_first": True}).json()
    assert [item["label"] for item in positives_first["items"]] == sorted(labels)
    bad_label = client.get("/api/v1/predictions", params={"label": "maybe"})
    assert bad_label.status_code == 422 and "label" in bad_label.json()["detail"]


def test_delete_removes_row_and_files(client: TestClient, settings: Settings, png_bytes: bytes) -> None:
    body = post_image(client, png_bytes).json()
    folder = settings.resolved_storage_dir / "predictions" / body["id"]
    assert (folder / "original.png").is_file()
    assert client.delete(body["links"]["self"]).status_code == 204
    assert client.get(body["links"]["self"]).status_code == 404
    assert client.get(body["links"]["overlay"]).status_code == 404
    assert not folder.exists()
    assert client.delete(body["links"]["self"]).status_code == 404


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (f"/api/v1/predictions/{uuid.uuid4()}", "No prediction"),
        ("/api/v1/predictions/not-a-uuid", "No prediction"),
        ("/api/v1/predictions/not-a-uuid/overlay.png", "No prediction with id 'not-a-uuid'."),
        (f"/api/v1/predictions/{uuid.uuid4()}/overlay.png", "No prediction"),
        (f"/api/v1/predictions/{uuid.uuid4()}/secrets.txt", "No file"),
        ("/api/v1/predictions/..%2F..%2Fich.sqlite3/original.png", "Not Found"),
        ("/api/v1/predictions/..%2F..%2Fich.sqlite3", "Not Found"),
    ],
)
def test_unknown_ids_and_files_are_404(client: TestClient, path: str, message: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert message in response.json()["detail"]


def test_a_malformed_id_is_404_for_every_method(client: TestClient) -> None:
    for response in (client.get("/api/v1/predictions/12345"), client.delete("/api/v1/predictions/12345")):
        assert response.status_code == 404
        assert response.json() == {"detail": "No prediction with id '12345'."}


def test_missing_file_field_is_422(client: TestClient) -> None:
    response = client.post("/api/v1/predictions", data={"patient_name": "x"})
    assert response.status_code == 422
    assert "file" in response.json()["detail"]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"this is plainly not an image" * 10, 415, "PNG, JPEG, DICOM"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "PNG"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 100, 400, "JPEG"),
    ],
)
def test_bad_uploads_get_clear_errors(
    client: TestClient, settings: Settings, data: bytes, status: int, message: str
) -> None:
    response = post_image(client, data, name="slice.png")
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert client.get("/api/v1/predictions").json()["total"] == 0
    assert not any((settings.resolved_storage_dir / "predictions").iterdir())


def test_truncated_png_is_400(client: TestClient, png_bytes: bytes) -> None:
    response = post_image(client, png_bytes[: len(png_bytes) // 3])
    assert response.status_code == 400
    assert "PNG" in response.json()["detail"]


def test_upload_over_the_limit_is_413(client: TestClient) -> None:
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(3 * 1024 * 1024)
    response = post_image(client, too_big)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_decompression_bomb_is_refused(client: TestClient) -> None:
    header = (
        b"\x89PNG\r\n\x1a\n"
        + b"\x00\x00\x00\rIHDR"
        + (50000).to_bytes(4, "big") * 2
        + b"\x08\x00\x00\x00\x00"
    )
    response = post_image(client, header + b"\x00" * 64)
    assert response.status_code == 400
    assert "50000 x 50000" in response.json()["detail"]


def test_authentication_is_required(client: TestClient, png_bytes: bytes) -> None:
    anonymous = client.get("/api/v1/predictions", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert "Authorization: Bearer" in anonymous.json()["detail"]
    wrong = client.post(
        "/api/v1/predictions", files={"file": ("a.png", png_bytes)}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 403
    assert "not valid" in wrong.json()["detail"]
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200


def test_model_version_can_be_chosen(client: TestClient, png_bytes: bytes) -> None:
    older = client.post("/api/v1/predictions?model_version=0.0.1", files={"file": ("a.png", png_bytes)})
    assert older.status_code == 201 and older.json()["model"]["version"] == "0.0.1"
    unknown = client.post("/api/v1/predictions?model=nonexistent", files={"file": ("a.png", png_bytes)})
    assert unknown.status_code == 404 and "nonexistent" in unknown.json()["detail"]
    models = client.get("/api/v1/models").json()
    assert [(m["version"], m["default"]) for m in models] == [("0.0.1", False), ("0.0.2", True)]
    card = client.get("/api/v1/models/ich-compact/0.0.2/card").json()
    assert card["threshold"] == 0.5


def test_without_a_model_the_service_is_not_ready(tmp_path: Path, png_bytes: bytes, api_key: str) -> None:
    empty = tmp_path / "empty_store"
    empty.mkdir()
    settings = Settings(
        data_dir=tmp_path / "data", model_store=empty, default_model="ich-compact", api_keys=api_key
    )
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {api_key}"
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["model"] is False
        response = post_image(client, png_bytes)
        assert response.status_code == 503
        assert "not loaded" in response.json()["detail"]


def test_predictions_survive_a_restart(settings: Settings, png_bytes: bytes, api_key: str) -> None:
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {api_key}"
        created = post_image(client, png_bytes).json()
        overlay = client.get(created["links"]["overlay"]).content
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {api_key}"
        again = client.get(created["links"]["self"])
        assert again.status_code == 200
        assert again.json()["probability"] == created["probability"]
        assert client.get(created["links"]["overlay"]).content == overlay


def test_full_disk_gives_503_and_stores_nothing(
    client: TestClient, settings: Settings, png_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(_descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("app.services.storage.os.fsync", no_space)
    response = post_image(client, png_bytes)
    assert response.status_code == 503
    assert "nothing was saved" in response.json()["detail"]
    monkeypatch.undo()
    assert client.get("/api/v1/predictions").json()["total"] == 0
    assert list((settings.resolved_storage_dir / "predictions").iterdir()) == []


def test_database_failure_removes_the_files(
    client: TestClient, settings: Settings, png_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = client.app.state.predictions  # type: ignore[attr-defined]

    class BrokenDatabase:
        def session(self) -> object:
            raise OperationalError("INSERT", {}, Exception("database went away"))

    monkeypatch.setattr(service.records, "database", BrokenDatabase())
    response = post_image(client, png_bytes)
    assert response.status_code == 503
    assert "database" in response.json()["detail"]
    monkeypatch.undo()
    assert list((settings.resolved_storage_dir / "predictions").iterdir()) == []


def test_overlong_form_field_is_400_naming_it(client: TestClient, png_bytes: bytes) -> None:
    response = post_image(client, png_bytes, patient_id="P" * 101)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Patient ID is longer than 100 characters")
    assert client.get("/api/v1/predictions").json()["total"] == 0
