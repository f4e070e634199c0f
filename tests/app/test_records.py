"""The data-access layer: a record's row and its files are stored, read and deleted together."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core.errors import NotFound, StorageUnavailable
from app.db import AnalysisClaim, Database, Study, StudySlice, utcnow
from app.services.records import Records
from app.services.storage import STUDIES, FileStore


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'records.sqlite3'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def records(database: Database, tmp_path: Path) -> Records[Study]:
    files = FileStore(tmp_path / "storage")
    files.prepare()
    return Records(database, files, Study, STUDIES, dependents=(StudySlice, AnalysisClaim))


def study_row(**values: object) -> Study:
    return Study(
        id=str(uuid.uuid4()),
        created_at=utcnow(),
        model_name="ich-compact",
        model_version="0.0.2",
        probability=0.7,
        label="hemorrhage",
        threshold=0.5,
        aggregation="max",
        num_slices=2,
        source="upload",
        details={"key_slices": [1, 0]},
        **values,
    )


def store(records: Records[Study], study: Study) -> None:
    def add_rows(session: Session) -> None:
        session.add(study)
        session.flush()
        session.add_all(
            StudySlice(study_id=study.id, slice_index=index, probability=0.1 * index) for index in (1, 0)
        )

    records.store(study.id, {"slice_000.png": b"png0", "slice_001.png": b"png1"}, add_rows)


def test_store_get_list_read_and_delete(records: Records[Study]) -> None:
    study = study_row(patient_id="P-17")
    store(records, study)

    assert records.get(study.id).details == {"key_slices": [1, 0]}
    assert [
        item.slice_index for item in records.dependent_rows(StudySlice, study.id, StudySlice.slice_index)
    ] == [
        0,
        1,
    ]
    items, total = records.list(patient_id="P-1")
    assert total == 1 and [item.id for item in items] == [study.id]
    assert records.read_file(study.id, "slice_001.png") == b"png1"
    assert records.where(Study.patient_id == "P-17")[0].id == study.id

    records.delete(study.id)
    with pytest.raises(NotFound, match=f"No study with id {study.id}."):
        records.get(study.id)
    assert records.dependent_rows(StudySlice, study.id, StudySlice.slice_index) == []
    assert not records.files.folder(study.id, STUDIES).exists()


def test_unknown_ids_are_not_found_with_the_records_noun(records: Records[Study]) -> None:
    missing = str(uuid.uuid4())
    for action in (records.get, records.delete, lambda item: records.update_details(item, x=1)):
        with pytest.raises(NotFound) as caught:
            action(missing)
        assert caught.value.detail == f"No study with id {missing}."


def test_update_details_adds_entries(records: Records[Study]) -> None:
    study = study_row()
    store(records, study)
    updated = records.update_details(study.id, stored_in_pacs=[])
    assert updated.details == {"key_slices": [1, 0], "stored_in_pacs": []}
    assert records.get(study.id).details == updated.details


def test_cached_file_is_made_once(records: Records[Study]) -> None:
    study = study_row()
    store(records, study)
    made: list[int] = []

    def make() -> bytes:
        made.append(1)
        return b"%PDF"

    assert records.cached_file(study.id, "report.pdf", make) == b"%PDF"
    assert records.cached_file(study.id, "report.pdf", make) == b"%PDF"
    assert made == [1]


def test_a_database_failure_leaves_neither_rows_nor_files(records: Records[Study]) -> None:
    study = study_row()

    def fail(session: Session) -> None:
        raise OperationalError("INSERT", {}, Exception("database went away"))

    with pytest.raises(StorageUnavailable, match="database is not reachable"):
        records.store(study.id, {"slice_000.png": b"png0"}, fail)
    assert not records.files.folder(study.id, STUDIES).exists()

    def interrupted(session: Session) -> None:
        session.add(study)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records.store(study.id, {"slice_000.png": b"png0"}, interrupted)
    assert not records.files.folder(study.id, STUDIES).exists()
    with pytest.raises(NotFound):
        records.get(study.id)
