"""PACS integration against a real Orthanc with its DICOMweb plugin, started on loopback ports.

A CT series built from CT-ICH slices is stored in Orthanc with STOW-RS, analysed by
StudyInstanceUID through the API, and what the service stored back is retrieved with WADO-RS
and checked with pydicom.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from pypdf import PdfReader
from sqlalchemy import select, update

from app.core.config import Settings
from app.core.errors import PacsError
from app.db import AnalysisClaim, Database, Study
from app.main import create_app
from tests.app.conftest import API_KEY, DATA_DIR
from tests.support.dicom_series import patient_jpegs, series_from_jpegs
from tests.support.orthanc import OrthancServer

NUM_SLICES = 6
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    with OrthancServer() as server:
        yield server


def upload_series(orthanc: OrthancServer, first_slice: int = 8) -> tuple[str, str, list[Dataset]]:
    """Store a new CT series in Orthanc with STOW-RS; returns its study and series UIDs and datasets."""
    study_uid = generate_uid()
    files = series_from_jpegs(
        patient_jpegs(DATA_DIR, "050")[first_slice : first_slice + NUM_SLICES], study_uid=study_uid
    )
    datasets = [pydicom.dcmread(io.BytesIO(data)) for _, data in files]
    DICOMwebClient(orthanc.dicomweb_url).store_instances(datasets)
    return study_uid, str(datasets[0].SeriesInstanceUID), datasets


def pacs_settings(settings: Settings, orthanc: OrthancServer, **values: object) -> Settings:
    return settings.model_copy(update={"dicomweb_url": orthanc.dicomweb_url, **values})


@pytest.fixture
def local_settings(tmp_path: Path, model_store: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", model_store=model_store, default_model="ich-compact", api_keys=API_KEY
    )


def api_client(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings))
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


def retrieve_new_series(
    orthanc: OrthancServer, study_uid: str, source_series: str
) -> dict[str, list[Dataset]]:
    """Every series of the study except the source, retrieved with WADO-RS, keyed by modality."""
    web = DICOMwebClient(orthanc.dicomweb_url)
    found: dict[str, list[Dataset]] = {}
    for item in web.search_for_series(study_uid):
        series = Dataset.from_json(item)
        if series.SeriesInstanceUID == source_series:
            continue
        found[str(series.Modality)] = web.retrieve_series(study_uid, str(series.SeriesInstanceUID))
    return found


def content_items(dataset: Dataset) -> dict[str, Dataset]:
    return {str(item.ConceptNameCodeSequence[0].CodeMeaning): item for item in dataset.ContentSequence}


def test_analyse_a_pacs_study_and_store_the_results_back(orthanc: OrthancServer, settings: Settings) -> None:
    study_uid, series_uid, sources = upload_series(orthanc)
    source_uids = {str(item.SOPInstanceUID) for item in sources}
    with api_client(pacs_settings(settings, orthanc)) as client:
        response = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["source"] == "dicomweb"
        assert body["study_instance_uid"] == study_uid and body["series_instance_uid"] == series_uid
        assert body["num_slices"] == NUM_SLICES
        assert [item["position_mm"] for item in body["slices"]] == [
            5.0 * index for index in range(NUM_SLICES)
        ]
        stored = {item["kind"]: item for item in body["stored_in_pacs"]}
        assert set(stored) == {"secondary_capture", "encapsulated_pdf", "structured_report"}
        assert len(stored["secondary_capture"]["sop_instance_uids"]) == 3
        assert client.get(body["links"]["self"]).json()["stored_in_pacs"] == body["stored_in_pacs"]

    found = retrieve_new_series(orthanc, study_uid, series_uid)
    assert set(found) == {"OT", "DOC", "SR"}
    everything = [dataset for datasets in found.values() for dataset in datasets]
    for dataset in everything:
        assert dataset.StudyInstanceUID == study_uid
        assert dataset.SeriesInstanceUID != series_uid
        assert dataset.PatientID == "SERIES-TEST"
        assert dataset.Manufacturer == "ICH Detect"
        assert "not for clinical use" in dataset.SeriesDescription.lower()

    captures = found["OT"]
    assert len(captures) == 3
    assert {str(item.SOPInstanceUID) for item in captures} == set(
        stored["secondary_capture"]["sop_instance_uids"]
    )
    key_uids = {body["slices"][index]["sop_instance_uid"] for index in body["key_slices"]}
    referenced = set()
    for capture in captures:
        assert capture.SOPClassUID == SecondaryCaptureImageStorage
        assert capture.BurnedInAnnotation == "YES"
        assert capture.PhotometricInterpretation == "RGB"
        assert capture.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
        referenced.add(str(capture.SourceImageSequence[0].ReferencedSOPInstanceUID))
        pixels = capture.pixel_array
        assert pixels.ndim == 3 and pixels.shape[2] == 3
        # Heat-map colour: pixels far from grey (a greyscale CT has equal channels).
        spread = pixels.max(axis=2).astype(int) - pixels.min(axis=2).astype(int)
        assert (spread > 40).sum() > 500
        # The warning is burned in as white text on the dark band at the top.
        band = pixels[: pixels.shape[0] // 20]
        assert (band.min(axis=2) > 200).sum() > 50
    assert referenced == key_uids and referenced <= source_uids

    (pdf,) = found["DOC"]
    assert pdf.SOPClassUID == ENCAPSULATED_PDF
    assert pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"
    document = bytes(pdf.EncapsulatedDocument)
    assert document.startswith(b"%PDF")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(document)).pages)
    assert "Not for clinical use" in text and body["id"] in text
    evidence = pdf.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == study_uid
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid

    (report,) = found["SR"]
    assert report.SOPClassUID == COMPREHENSIVE_3D_SR
    items = content_items(report)
    finding = items["Intracranial hemorrhage"].ConceptCodeSequence[0].CodeMeaning
    assert finding == ("Present" if body["label"] == "hemorrhage" else "Absent")
    probability = items["Probability of intracranial haemorrhage"].MeasuredValueSequence[0].NumericValue
    assert float(probability) == pytest.approx(body["probability"], abs=1e-5)
    assert items["Operating point of the decision threshold"].TextValue == body["operating_point"]
    assert items["Algorithm Name"].TextValue == body["model"]["name"]
    assert items["Algorithm Version"].TextValue == body["model"]["version"]
    assert "not for clinical use" in items["Comment"].TextValue.lower()
    evidence_series = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence_series.SeriesInstanceUID == series_uid


def test_the_structured_report_names_the_site_operating_point(
    orthanc: OrthancServer, local_settings: Settings
) -> None:
    study_uid, series_uid, _ = upload_series(orthanc)
    settings = pacs_settings(local_settings, orthanc, study_threshold=0.123)
    with api_client(settings) as client:
        response = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert response.status_code == 201, response.text
        body = response.json()
    assert body["threshold"] == 0.123
    (report,) = retrieve_new_series(orthanc, study_uid, series_uid)["SR"]
    items = content_items(report)
    threshold = items["Decision threshold"].MeasuredValueSequence[0].NumericValue
    assert float(threshold) == pytest.approx(0.123)
    assert (
        items["Operating point of the decision threshold"].TextValue
        == "site setting ICH_STUDY_THRESHOLD=0.123"
    )
    finding = items["Intracranial hemorrhage"].ConceptCodeSequence[0].CodeMeaning
    assert finding == ("Present" if body["probability"] >= 0.123 else "Absent")


def test_unknown_study_is_404(orthanc: OrthancServer, local_settings: Settings) -> None:
    with api_client(pacs_settings(local_settings, orthanc)) as client:
        unknown = generate_uid()
        response = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": unknown})
        assert response.status_code == 404
        assert unknown in response.json()["detail"]
        invalid = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": "../etc"})
        assert invalid.status_code == 422


def test_without_dicomweb_settings_it_is_503(local_settings: Settings) -> None:
    with api_client(local_settings) as client:
        response = client.post(
            "/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": generate_uid()}
        )
        assert response.status_code == 503
        assert "ICH_DICOMWEB_URL" in response.json()["detail"]


def test_stopped_pacs_is_503(local_settings: Settings) -> None:
    with OrthancServer() as stopping:
        study_uid, _, _ = upload_series(stopping)
        settings = pacs_settings(local_settings, stopping, dicomweb_timeout_seconds=5)
    with api_client(settings) as client:
        response = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert response.status_code == 503
        assert "did not answer" in response.json()["detail"]
        assert client.get("/api/v1/studies").json()["total"] == 0


def test_watcher_analyses_new_studies(orthanc: OrthancServer, local_settings: Settings) -> None:
    study_uid, _, _ = upload_series(orthanc, first_slice=10)
    settings = pacs_settings(
        local_settings, orthanc, dicomweb_poll_seconds=0.5, dicomweb_poll_lookback_days=36500
    )
    with api_client(settings) as client:
        deadline = time.monotonic() + 120
        matches: list[dict[str, object]] = []
        while time.monotonic() < deadline and not matches:
            time.sleep(0.5)
            items = client.get("/api/v1/studies", params={"page_size": 200}).json()["items"]
            ids = [item["id"] for item in items if item["source"] == "dicomweb"]
            matches = [
                body
                for body in (client.get(f"/api/v1/studies/{identifier}").json() for identifier in ids)
                # The row is written before the results are stored back; wait for both.
                if body["study_instance_uid"] == study_uid and body["stored_in_pacs"]
            ]
        assert matches, "the watcher did not analyse the new study"
        assert matches[0]["num_slices"] == NUM_SLICES
        assert len(matches[0]["stored_in_pacs"]) == 3
    # Each study is analysed once: the stored results are not analysed again as a new study.
    series = DICOMwebClient(orthanc.dicomweb_url).search_for_series(study_uid)
    assert len(series) == 4


def new_series_count(orthanc: OrthancServer, study_uid: str) -> int:
    return len(DICOMwebClient(orthanc.dicomweb_url).search_for_series(study_uid))


def claims_of(settings: Settings, study_uid: str) -> list[AnalysisClaim]:
    database = Database(settings.resolved_database_url)
    try:
        with database.session() as session:
            return list(
                session.scalars(select(AnalysisClaim).where(AnalysisClaim.study_instance_uid == study_uid))
            )
    finally:
        database.dispose()


def hold_claim(settings: Settings, study_uid: str, series_uid: str, silent_for: timedelta) -> str:
    """A claim of another worker on the default model (ich-compact 0.0.2), last heard of ``silent_for`` ago."""
    heard = datetime.now(UTC) - silent_for
    claim_id = str(uuid.uuid4())
    database = Database(settings.resolved_database_url)
    try:
        with database.session() as session:
            session.add(
                AnalysisClaim(
                    id=claim_id,
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    model_name="ich-compact",
                    model_version="0.0.2",
                    status="running",
                    owner="other-host:4242:0badc0de",
                    claimed_at=heard,
                    heartbeat_at=heard,
                )
            )
    finally:
        database.dispose()
    return claim_id


def test_a_study_is_analysed_once_per_model_version(orthanc: OrthancServer, settings: Settings) -> None:
    """Asking again returns the stored analysis (200) and stores nothing more in the PACS."""
    study_uid, _, _ = upload_series(orthanc, first_slice=4)
    with api_client(pacs_settings(settings, orthanc)) as client:
        first = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert first.status_code == 201, first.text
        again = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert new_series_count(orthanc, study_uid) == 4
        assert client.get("/api/v1/studies").json()["total"] == 1

        # Another model version is another analysis.
        other = client.post(
            "/api/v1/studies/dicomweb?wait=120",
            json={"study_instance_uid": study_uid, "model_version": "0.0.1"},
        )
        assert other.status_code == 201, other.text
        assert other.json()["id"] != first.json()["id"] and other.json()["model"]["version"] == "0.0.1"
        assert new_series_count(orthanc, study_uid) == 7
    claims = claims_of(settings, study_uid)
    assert sorted((claim.model_version, claim.status) for claim in claims) == [
        ("0.0.1", "done"),
        ("0.0.2", "done"),
    ]
    assert {claim.study_id for claim in claims} == {first.json()["id"], other.json()["id"]}


def test_a_study_another_worker_analyses_is_409(orthanc: OrthancServer, local_settings: Settings) -> None:
    study_uid, series_uid, _ = upload_series(orthanc, first_slice=2)
    settings = pacs_settings(local_settings, orthanc)
    with api_client(settings) as client:
        hold_claim(settings, study_uid, series_uid, silent_for=timedelta(seconds=5))
        response = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert response.status_code == 409, response.text
        assert "Another worker is analysing this series with ich-compact 0.0.2" in response.json()["detail"]
        assert int(response.headers["Retry-After"]) > 0
        assert client.get("/api/v1/studies").json()["total"] == 0
    assert new_series_count(orthanc, study_uid) == 1


def test_a_stuck_claim_is_taken_over(orthanc: OrthancServer, settings: Settings) -> None:
    """A worker died while analysing: after the claim timeout the next request analyses the study."""
    study_uid, series_uid, _ = upload_series(orthanc, first_slice=3)
    configured = pacs_settings(settings, orthanc, analysis_claim_timeout_seconds=300)
    with api_client(configured) as client:
        claim_id = hold_claim(configured, study_uid, series_uid, silent_for=timedelta(seconds=301))
        response = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert response.status_code == 201, response.text
        assert len(response.json()["stored_in_pacs"]) == 3
    (claim,) = claims_of(configured, study_uid)
    assert claim.id == claim_id and claim.status == "done" and claim.study_id == response.json()["id"]
    assert not claim.owner.startswith("other-host:")
    assert new_series_count(orthanc, study_uid) == 4


def test_results_that_did_not_reach_the_pacs_are_stored_back_when_asked_again(
    orthanc: OrthancServer, local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_uid, _, _ = upload_series(orthanc, first_slice=5)
    with api_client(pacs_settings(local_settings, orthanc)) as client:
        pacs = client.app.state.pacs  # type: ignore[attr-defined]
        store_results = pacs.store_results

        def refuse(*args: object) -> object:
            raise PacsError("The PACS refused 5 of the 5 result objects (STOW-RS).")

        monkeypatch.setattr(pacs, "store_results", refuse)
        refused = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert refused.status_code == 502, refused.text
        assert "ask again to store its results back" in refused.json()["detail"]
        (study,) = client.get("/api/v1/studies").json()["items"]
        assert study["id"] in refused.json()["detail"]
        assert [claim.status for claim in claims_of(local_settings, study_uid)] == ["failed"]

        monkeypatch.setattr(pacs, "store_results", store_results)
        again = client.post("/api/v1/studies/dicomweb?wait=120", json={"study_instance_uid": study_uid})
        assert again.status_code == 200, again.text
        assert again.json()["id"] == study["id"] and len(again.json()["stored_in_pacs"]) == 3
        assert client.get("/api/v1/studies").json()["total"] == 1
    assert [claim.status for claim in claims_of(local_settings, study_uid)] == ["done"]
    assert new_series_count(orthanc, study_uid) == 4


def test_a_pacs_study_is_a_job_done_once_its_results_are_stored_back(
    orthanc: OrthancServer, local_settings: Settings
) -> None:
    study_uid, series_uid, _ = upload_series(orthanc, first_slice=6)
    with api_client(pacs_settings(local_settings, orthanc)) as client:
        response = client.post("/api/v1/studies/dicomweb", json={"study_instance_uid": study_uid})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] == "queued" and response.headers["location"] == job["links"]["self"]
        result = client.get(f"{job['links']['self']}?wait=120")
        assert result.status_code == 200, result.text
        body = result.json()
        # Done only once the results are in the PACS.
        assert body["id"] == job["id"] and body["series_instance_uid"] == series_uid
        assert body["source"] == "dicomweb" and len(body["stored_in_pacs"]) == 3
        assert body["num_slices"] == NUM_SLICES
        again = client.post("/api/v1/studies/dicomweb", json={"study_instance_uid": study_uid})
        assert again.status_code == 200 and again.json() == body
    (claim,) = claims_of(local_settings, study_uid)
    assert claim.status == "done" and claim.study_id == job["id"]
    assert new_series_count(orthanc, study_uid) == 4


def test_a_pacs_job_of_a_stopped_process_waits_for_its_claim_then_runs(
    orthanc: OrthancServer, local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process stopped after claiming the series and queuing the job: after a restart the job
    waits (not failed, the attempt not counted) until the claim looks dead, then runs."""
    study_uid, _, _ = upload_series(orthanc, first_slice=7)
    settings = pacs_settings(local_settings, orthanc)
    with api_client(settings) as first:
        monkeypatch.setattr(first.app.state.jobs, "submit", lambda *args, **kwargs: None)  # type: ignore[attr-defined]
        queued = first.post("/api/v1/studies/dicomweb", json={"study_instance_uid": study_uid})
        assert queued.status_code == 202, queued.text
        monkeypatch.undo()
    study_id = queued.json()["id"]
    with api_client(settings) as second:
        jobs = second.app.state.jobs  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while (row := second.get(f"/api/v1/studies/{study_id}")).json()["status"] != "queued" or (
            study_id in jobs._submitted
        ):
            assert time.monotonic() < deadline, row.text
            time.sleep(0.2)
        database = second.app.state.database  # type: ignore[attr-defined]
        with database.session() as session:
            session.execute(
                update(AnalysisClaim)
                .where(AnalysisClaim.study_instance_uid == study_uid)
                .values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
            )
        assert jobs.recover() == [study_id]
        done = second.get(f"/api/v1/studies/{study_id}?wait=120")
        assert done.status_code == 200, done.text
        assert len(done.json()["stored_in_pacs"]) == 3
        with database.session() as session:
            assert session.get(Study, study_id).attempts == 1
    (claim,) = claims_of(settings, study_uid)
    assert claim.status == "done" and claim.study_id == study_id
