"""Several workers and replicas watching one PACS: each study is analysed and stored back once.

Two real services share one PostgreSQL, one Orthanc and one data folder, as replicas do: the
first with two uvicorn workers (as the image runs), the second with one. All three workers run
the PACS watcher; new studies arrive while they poll.
"""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from app.db import AnalysisClaim, Database, Study
from tests.app.conftest import API_KEY, DATA_DIR
from tests.support.dicom_series import patient_jpegs, series_from_jpegs
from tests.support.orthanc import OrthancServer
from tests.support.postgres import create_database
from tests.support.server import ServiceProcess

NUM_STUDIES = 3
NUM_SLICES = 4
POLL_SECONDS = 0.25


def store_study(orthanc: OrthancServer, first_slice: int) -> str:
    """A new CT study of one series in Orthanc (STOW-RS); returns its StudyInstanceUID."""
    study_uid = generate_uid()
    files = series_from_jpegs(
        patient_jpegs(DATA_DIR, "050")[first_slice : first_slice + NUM_SLICES], study_uid=study_uid
    )
    DICOMwebClient(orthanc.dicomweb_url).store_instances(
        [pydicom.dcmread(io.BytesIO(data)) for _, data in files]
    )
    return study_uid


def finished_claims(database: Database) -> int:
    with database.session() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(AnalysisClaim).where(AnalysisClaim.status == "done")
            )
            or 0
        )


def test_workers_and_replicas_analyse_each_pacs_study_once(
    tmp_path: Path, postgres_server: str, model_store: Path
) -> None:
    database_url = create_database(postgres_server, f"ich_{uuid.uuid4().hex[:12]}")
    with OrthancServer() as orthanc:
        env = {
            "ICH_DATA_DIR": str(tmp_path / "data"),
            "ICH_DATABASE_URL": database_url,
            "ICH_MODEL_STORE": str(model_store),
            "ICH_DEFAULT_MODEL": "ich-compact",
            "ICH_API_KEYS": API_KEY,
            "ICH_SESSION_SECRET": "replicas-share-this-secret-0123456789",
            "ICH_INFERENCE_THREADS": "1",
            "ICH_DICOMWEB_URL": orthanc.dicomweb_url,
            "ICH_DICOMWEB_POLL_SECONDS": str(POLL_SECONDS),
            "ICH_DICOMWEB_POLL_LOOKBACK_DAYS": "36500",
        }
        database = Database(database_url)
        try:
            with (
                ServiceProcess({**env, "ICH_WORKERS": "2"}) as first,
                ServiceProcess({**env, "ICH_WORKERS": "1"}) as second,
            ):
                study_uids = [store_study(orthanc, first_slice=4 + 4 * index) for index in range(NUM_STUDIES)]
                deadline = time.monotonic() + 240
                while finished_claims(database) < NUM_STUDIES and time.monotonic() < deadline:
                    time.sleep(0.5)
                # Give every watcher a few more polls to analyse something twice.
                time.sleep(8 * POLL_SECONDS)
                logs = first.log() + second.log()
                assert finished_claims(database) == NUM_STUDIES, logs
                # Three watchers ran: two workers of the first replica, one of the second.
                assert first.log().count("Watching the PACS for new CT studies") == 2, first.log()
                assert second.log().count("Watching the PACS for new CT studies") == 1, second.log()

            web = DICOMwebClient(orthanc.dicomweb_url)
            with database.session() as session:
                for study_uid in study_uids:
                    studies = list(
                        session.scalars(select(Study).where(Study.study_instance_uid == study_uid))
                    )
                    assert len(studies) == 1, logs
                    (study,) = studies
                    assert study.source == "dicomweb" and study.num_slices == NUM_SLICES
                    assert len(study.details["stored_in_pacs"]) == 3
                    (claim,) = session.scalars(
                        select(AnalysisClaim).where(AnalysisClaim.study_instance_uid == study_uid)
                    )
                    assert claim.status == "done" and claim.study_id == study.id
                    # One set of results stored back: the source series and three new ones.
                    series = [item["0020000E"]["Value"][0] for item in web.search_for_series(study_uid)]
                    assert len(series) == 4, logs
                    stored = {item["series_instance_uid"] for item in study.details["stored_in_pacs"]}
                    assert stored < set(series)
        finally:
            database.dispose()
