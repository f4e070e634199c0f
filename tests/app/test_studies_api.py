"""Whole-study analysis through the API: DICOM series built from CT-ICH slices, ZIPs, real RSNA files."""

from __future__ import annotations

import errno
import io
import random
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import keras
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
from sqlalchemy.exc import OperationalError

from app.core.config import Settings
from app.main import create_app
from ml.model_io import save_bundle
from ml.models.classifier import build_classifier
from tests.app.conftest import API_KEY, DATA_DIR, tiny_card
from tests.support.dicom_series import ct_slice, patient_jpegs, series_from_jpegs

NUM_SLICES = 8
RSNA_DIR = DATA_DIR / "rsna_dicom" / "dicom"


@pytest.fixture(scope="module")
def series() -> list[tuple[str, bytes]]:
    """Eight consecutive slices of CT-ICH patient 050 as a DICOM CT series, in anatomical order."""
    return series_from_jpegs(patient_jpegs(DATA_DIR, "050")[8 : 8 + NUM_SLICES])


def post_study(client: TestClient, files: list[tuple[str, bytes]], **fields: str) -> object:
    return client.post("/api/v1/studies?wait=120", files=[("files", item) for item in files], data=fields)


def zip_of(files: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def sop_uid(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def recompressed(files: list[tuple[str, bytes]], syntax: pydicom.uid.UID) -> list[tuple[str, bytes]]:
    """The same series with its pixel data encoded in a compressed transfer syntax."""
    result = []
    for name, data in files:
        dataset = pydicom.dcmread(io.BytesIO(data))
        dataset.compress(syntax)
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        result.append((name, buffer.getvalue()))
    return result


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def test_series_of_files_gives_a_study_result(client: TestClient, series: list[tuple[str, bytes]]) -> None:
    response = post_study(client, series, requesting_clinician="Dr Study")
    assert response.status_code == 201, response.text
    body = response.json()
    uuid.UUID(body["id"])
    assert body["num_slices"] == NUM_SLICES and len(body["slices"]) == NUM_SLICES
    assert body["aggregation"] == "max"
    assert body["threshold"] == 0.5
    slice_probabilities = [item["probability"] for item in body["slices"]]
    assert body["probability"] == pytest.approx(max(slice_probabilities))
    assert body["label"] == ("hemorrhage" if body["probability"] >= body["threshold"] else "no_hemorrhage")
    assert body["source"] == "upload" and body["ordering"] == "position"
    assert body["model"] == {"name": "ich-compact", "version": "0.0.2"}
    assert body["study"]["patient_id"] == "SERIES-TEST"
    assert body["study"]["requesting_clinician"] == "Dr Study"
    assert body["skipped"] == []
    # Slices come back in anatomical order with the source SOP Instance UIDs.
    assert [item["sop_instance_uid"] for item in body["slices"]] == [sop_uid(data) for _, data in series]
    assert [item["position_mm"] for item in body["slices"]] == [5.0 * index for index in range(NUM_SLICES)]
    assert [item["index"] for item in body["slices"]] == list(range(NUM_SLICES))
    key = [item["index"] for item in body["slices"] if item["key"]]
    assert len(key) == 3 and sorted(key) == sorted(body["key_slices"])
    assert body["key_slices"][0] == int(np.argmax(slice_probabilities))
    assert "Not for clinical use" in body["disclaimer"]

    fetched = client.get(body["links"]["self"])
    assert fetched.status_code == 200
    assert fetched.json() == body
    overlay = client.get(body["slices"][3]["links"]["overlay"])
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
    image = decode_png(client.get(body["slices"][3]["links"]["image"]).content)
    rows, columns = pydicom.dcmread(io.BytesIO(series[3][1])).pixel_array.shape
    assert image.shape == (rows, columns)
    assert decode_png(overlay.content).shape == (rows, columns, 3)
    listing = client.get("/api/v1/studies").json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == body["id"]


def test_shuffled_series_and_zip_give_the_same_result(
    client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    ordered = post_study(client, series).json()
    shuffled_files = list(series)
    random.Random(7).shuffle(shuffled_files)
    assert shuffled_files != series
    shuffled = post_study(client, shuffled_files).json()
    archived = post_study(client, [("series.zip", zip_of(shuffled_files))]).json()
    for other in (shuffled, archived):
        assert other["probability"] == pytest.approx(ordered["probability"], abs=1e-6)
        assert other["label"] == ordered["label"]
        assert [item["sop_instance_uid"] for item in other["slices"]] == [
            item["sop_instance_uid"] for item in ordered["slices"]
        ]
        assert [item["probability"] for item in other["slices"]] == pytest.approx(
            [item["probability"] for item in ordered["slices"]], abs=1e-6
        )
        assert other["key_slices"] == ordered["key_slices"]


def test_localiser_and_other_files_are_skipped_with_reasons(
    client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    grey = np.full((64, 64), 120, np.uint8)
    dataset = pydicom.dcmread(io.BytesIO(series[0][1]))
    localiser = ct_slice(
        grey,
        0.0,
        99,
        str(dataset.StudyInstanceUID),
        str(dataset.SeriesInstanceUID),
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    extra = [("scout.dcm", localiser), ("notes.txt", b"not an image"), ("DICOMDIR-like.bin", b"\x00" * 200)]
    response = post_study(client, [*series, *extra])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["num_slices"] == NUM_SLICES
    reasons = {item["name"]: item["reason"] for item in body["skipped"]}
    assert reasons["scout.dcm"] == "localiser (scout) image"
    assert reasons["notes.txt"] == "not a DICOM file"
    assert reasons["DICOMDIR-like.bin"] == "not a DICOM file"


def test_nothing_usable_is_422_with_the_reasons(client: TestClient) -> None:
    response = post_study(client, [("a.txt", b"hello"), ("b.png", b"\x89PNG\r\n\x1a\n")])
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "No CT image slices" in detail and "a.txt: not a DICOM file" in detail


def test_unsafe_zip_is_400(client: TestClient, series: list[tuple[str, bytes]]) -> None:
    archive = zip_of([("../../etc/evil.dcm", series[0][1])])
    response = post_study(client, [("evil.zip", archive)])
    assert response.status_code == 400
    assert "unsafe path" in response.json()["detail"]


def test_zip_bomb_is_refused(client: TestClient) -> None:
    archive = zip_of([("zeros.dcm", b"\x00" * (20 * 1024 * 1024))])
    assert len(archive) < 100 * 1024
    response = post_study(client, [("bomb.zip", archive)])
    assert response.status_code in (400, 413)
    assert "ZIP bomb" in response.json()["detail"]


def test_zip_over_the_entry_limit_is_413(client: TestClient) -> None:
    archive = zip_of([(f"{index}.txt", b"x") for index in range(2001)], zipfile.ZIP_STORED)
    response = post_study(client, [("many.zip", archive)])
    assert response.status_code == 413
    assert "2001 files" in response.json()["detail"]


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=lambda uid: uid.name)
def test_compressed_series_is_decoded(
    client: TestClient, series: list[tuple[str, bytes]], syntax: pydicom.uid.UID
) -> None:
    plain = post_study(client, series[:3]).json()
    compressed = post_study(client, recompressed(series[:3], syntax))
    assert compressed.status_code == 201, compressed.text
    assert [item["probability"] for item in compressed.json()["slices"]] == pytest.approx(
        [item["probability"] for item in plain["slices"]], abs=1e-6
    )


def test_undecodable_transfer_syntax_is_415_naming_it(
    client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    dataset = pydicom.dcmread(io.BytesIO(series[0][1]))
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.MPEG2MPML
    dataset.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])
    dataset["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    response = post_study(client, [("mpeg.dcm", buffer.getvalue())])
    assert response.status_code == 415
    assert "MPEG2" in response.json()["detail"]


def test_report_pdf_has_the_decision(client: TestClient, series: list[tuple[str, bytes]]) -> None:
    from pypdf import PdfReader

    body = post_study(client, series).json()
    report = client.get(body["links"]["report"])
    assert report.status_code == 200 and report.headers["content-type"] == "application/pdf"
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(report.content)).pages)
    flat = " ".join(text.split())
    decision = "Haemorrhage suspected" if body["label"] == "hemorrhage" else "No haemorrhage detected"
    assert decision in flat
    assert f"over {NUM_SLICES} slices" in flat
    assert f"Slices analysed: {NUM_SLICES}" in flat
    assert "aggregation 'max'" in flat
    assert "Not for clinical use" in flat and "NOT FOR CLINICAL USE" in flat
    assert "Key slices" in flat and body["id"] in flat
    # The second request reads the stored report.
    assert client.get(body["links"]["report"]).content == report.content


@pytest.mark.data
def test_real_rsna_files(client: TestClient) -> None:
    paths = sorted(RSNA_DIR.glob("*.dcm"))[:3]
    files = [(path.name, path.read_bytes()) for path in paths]
    single = post_study(client, files[:1])
    assert single.status_code == 201, single.text
    assert single.json()["num_slices"] == 1
    assert single.json()["key_slices"] == [0] and single.json()["slices"][0]["key"]

    mixed = post_study(client, files)
    assert mixed.status_code == 201, mixed.text
    body = mixed.json()
    assert body["num_slices"] == 1
    assert sorted(item["reason"] for item in body["skipped"]) == ["belongs to another series"] * 2
    analysed = {item["sop_instance_uid"] for item in body["slices"]}
    skipped = {item["name"] for item in body["skipped"]}
    assert len(analysed) == 1 and len(skipped) == 2 and skipped < {path.name for path in paths}


def test_unknown_study_and_file_are_404(client: TestClient, series: list[tuple[str, bytes]]) -> None:
    assert client.get(f"/api/v1/studies/{uuid.uuid4()}").status_code == 404
    assert client.get("/api/v1/studies/not-a-uuid").json()["detail"] == "No study with id 'not-a-uuid'."
    assert client.get("/api/v1/studies/not-a-uuid/report.pdf").status_code == 404
    assert client.delete("/api/v1/studies/not-a-uuid").json() == {"detail": "No study with id 'not-a-uuid'."}
    body = post_study(client, series[:2]).json()
    assert client.get(f"{body['links']['self']}/overlay_999.png").status_code == 404
    assert client.get(f"{body['links']['self']}/../../etc/passwd").status_code == 404
    assert client.get(f"{body['links']['self']}/original.png").status_code == 404


def test_studies_require_an_api_key(client: TestClient, series: list[tuple[str, bytes]]) -> None:
    response = client.post("/api/v1/studies", files=[("files", series[0])], headers={"Authorization": ""})
    assert response.status_code == 401


def test_study_upload_limit_is_separate(
    settings: Settings, series: list[tuple[str, bytes]], tmp_path: Path
) -> None:
    # The slice limit is 2 MiB; the eight slices are larger together, accepted under the study limit.
    assert sum(len(data) for _, data in series) > settings.max_upload_bytes
    small = settings.model_copy(update={"max_study_upload_mb": 1.0})
    with TestClient(create_app(small)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        response = post_study(client, series)
        assert response.status_code == 413
        assert "1 MiB" in response.json()["detail"]


def test_delete_removes_rows_and_files(
    client: TestClient, settings: Settings, series: list[tuple[str, bytes]]
) -> None:
    body = post_study(client, series[:2]).json()
    folder = settings.resolved_storage_dir / "studies" / body["id"]
    assert folder.is_dir()
    assert client.delete(body["links"]["self"]).status_code == 204
    assert not folder.exists()
    assert client.get(body["links"]["self"]).status_code == 404


def test_studies_survive_a_restart(settings: Settings, series: list[tuple[str, bytes]]) -> None:
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        body = post_study(client, series).json()
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        again = client.get(body["links"]["self"])
        assert again.status_code == 200
        assert again.json() == body
        assert client.get(body["slices"][-1]["links"]["overlay"]).status_code == 200
        assert client.get(body["links"]["report"]).content.startswith(b"%PDF")


def test_full_disk_gives_503_and_stores_nothing(
    client: TestClient, settings: Settings, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(_descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("app.services.storage.os.fsync", no_space)
    response = post_study(client, series[:2])
    assert response.status_code == 503
    assert "nothing was saved" in response.json()["detail"]
    monkeypatch.undo()
    assert client.get("/api/v1/studies").json()["total"] == 0
    assert list((settings.resolved_storage_dir / "studies").iterdir()) == []


def test_database_failure_removes_the_files(
    client: TestClient, settings: Settings, series: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = client.app.state.studies  # type: ignore[attr-defined]

    class BrokenDatabase:
        def session(self) -> object:
            raise OperationalError("INSERT", {}, Exception("database went away"))

    monkeypatch.setattr(service.records, "database", BrokenDatabase())
    response = post_study(client, series[:2])
    assert response.status_code == 503
    assert "database" in response.json()["detail"]
    monkeypatch.undo()
    assert list((settings.resolved_storage_dir / "studies").iterdir()) == []


@pytest.fixture(scope="module")
def card_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose card names its study aggregation and study threshold."""
    store = tmp_path_factory.mktemp("card_store")
    card = {**tiny_card(version="0.1.0"), "study_aggregation": "top3_mean", "study_threshold": 0.25}
    keras.utils.set_random_seed(4)
    save_bundle(build_classifier((64, 64, 1), backbone="tiny"), card, store / "ich-compact" / "0.1.0")
    return store


@pytest.fixture
def card_client(tmp_path: Path, card_store: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data", model_store=card_store, default_model="ich-compact", api_keys=API_KEY
    )
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client


def test_aggregation_and_threshold_come_from_the_model_card(
    card_client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    body = post_study(card_client, series).json()
    assert body["aggregation"] == "top3_mean"
    assert body["threshold"] == 0.25
    top3 = sorted(item["probability"] for item in body["slices"])[-3:]
    assert body["probability"] == pytest.approx(sum(top3) / 3)
    assert body["label"] == ("hemorrhage" if body["probability"] >= 0.25 else "no_hemorrhage")


def test_decoders_for_the_common_compressed_syntaxes_are_installed() -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1

    for syntax in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEG2000Lossless):
        assert get_decoder(syntax).is_available, syntax.name
