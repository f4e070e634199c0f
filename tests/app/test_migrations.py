"""Alembic migrations on SQLite and PostgreSQL: empty databases, older ones, concurrent starts."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from app.cli import main
from app.core.config import Settings, get_settings
from app.db import BASELINE_REVISION, AnalysisClaim, Base, Database, Prediction, Study, alembic_config
from app.main import create_app
from app.services.auth import hash_key

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
LEGACY_KEY = "ich_legacy-key-made-before-migrations-0123456789"


@pytest.fixture
def url(database_url: str | None, tmp_path: Path) -> str:
    """An empty database: a new SQLite file, or a new database on the test PostgreSQL server."""
    return database_url or f"sqlite:///{tmp_path / 'migrations.sqlite3'}"


def table_names(database: Database) -> set[str]:
    return set(sa.inspect(database.engine).get_table_names())


def schema_differences(database: Database) -> list[object]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def insert_rows(database: Database) -> str:
    """One prediction and one API key, written with plain SQL as an older service would have."""
    prediction_id = str(uuid.uuid4())
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    metadata = sa.MetaData()
    predictions = sa.Table("predictions", metadata, autoload_with=database.engine)
    api_keys = sa.Table("api_keys", metadata, autoload_with=database.engine)
    with database.engine.begin() as connection:
        connection.execute(
            predictions.insert().values(
                id=prediction_id,
                created_at=now,
                model_name="ich-compact",
                model_version="0.0.1",
                probability=0.83,
                label="hemorrhage",
                threshold=0.5,
                source_format="png",
                image_width=512,
                image_height=512,
                patient_name="Legacy^Patient",
                patient_id="L-1",
                timings_ms={"total": 12.5},
                details={},
            )
        )
        connection.execute(
            api_keys.insert().values(
                name="legacy", prefix=LEGACY_KEY[:12], key_hash=hash_key(LEGACY_KEY), created_at=now
            )
        )
    return prediction_id


def test_the_schema_has_a_revision_history() -> None:
    assert HEAD is not None
    revisions = list(ScriptDirectory.from_config(alembic_config()).walk_revisions())
    assert revisions[-1].revision == BASELINE_REVISION and revisions[-1].down_revision is None


def test_empty_database_upgrades_to_head_matching_the_models(url: str) -> None:
    database = Database(url)
    try:
        assert database.revision() is None
        database.migrate()
        assert database.revision() == HEAD
        assert {"predictions", "api_keys", "alembic_version"} <= table_names(database)
        # The migrations build exactly what the models describe: nothing left to autogenerate.
        assert schema_differences(database) == []
        database.migrate()
        assert database.revision() == HEAD

        with database.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        assert table_names(database) <= {"alembic_version"}
        database.migrate()
        assert schema_differences(database) == []
    finally:
        database.dispose()


def test_database_at_first_revision_upgrades_and_keeps_rows(url: str) -> None:
    database = Database(url)
    try:
        database.migrate(BASELINE_REVISION)
        assert database.revision() == BASELINE_REVISION
        prediction_id = insert_rows(database)
        database.migrate()
        assert database.revision() == HEAD
        with database.session() as session:
            prediction = session.get(Prediction, prediction_id)
        assert prediction is not None
        assert prediction.patient_name == "Legacy^Patient"
        assert prediction.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert prediction.timings_ms == {"total": 12.5}
    finally:
        database.dispose()


def test_database_made_before_migrations_is_adopted(
    url: str, database_url: str | None, tmp_path: Path, model_store: Path
) -> None:
    """Tables without ``alembic_version`` (what ``create_all`` made) get stamped, rows intact."""
    database = Database(url)
    try:
        database.migrate(BASELINE_REVISION)
        with database.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE alembic_version"))
        prediction_id = insert_rows(database)
        assert database.revision() is None
    finally:
        database.dispose()

    data_dir = tmp_path / "data"
    if database_url is None:
        data_dir.mkdir()
        Path(url.removeprefix("sqlite:///")).rename(data_dir / "ich.sqlite3")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        model_store=model_store,
        default_model="ich-compact",
        api_keys="",
    )
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {LEGACY_KEY}"}
        listing = client.get("/api/v1/predictions", headers=headers)
        assert listing.status_code == 200, listing.text
        assert [item["id"] for item in listing.json()["items"]] == [prediction_id]
        assert listing.json()["items"][0]["study"]["patient_id"] == "L-1"
    upgraded = Database(settings.resolved_database_url)
    try:
        assert upgraded.revision() == HEAD
        assert schema_differences(upgraded) == []
    finally:
        upgraded.dispose()


def test_concurrent_migrations_wait_for_each_other(url: str) -> None:
    """Workers and replicas that start together: one migrates, the others find the schema done."""
    errors: list[BaseException] = []

    def migrate() -> None:
        database = Database(url)
        try:
            database.migrate()
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    database = Database(url)
    try:
        assert database.revision() == HEAD
    finally:
        database.dispose()


def test_cli_db_commands(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ICH_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert main(["db", "current"]) == 0
        assert "no revision" in capsys.readouterr().out
        assert main(["db", "upgrade", "--sql"]) == 0
        script = capsys.readouterr().out
        assert "CREATE TABLE predictions" in script and "CREATE TABLE api_keys" in script
        assert main(["db", "upgrade"]) == 0
        assert f"revision {HEAD}" in capsys.readouterr().out
        assert main(["db", "current"]) == 0
        assert capsys.readouterr().out.strip() == HEAD
    finally:
        get_settings.cache_clear()


def reflected(database: Database, name: str) -> sa.Table:
    """A table as the database has it now (the models describe the newest revision only)."""
    return sa.Table(name, sa.MetaData(), autoload_with=database.engine)


def patient_name_of(database: Database, prediction_id: str) -> str | None:
    predictions = reflected(database, "predictions")
    with database.engine.connect() as connection:
        return connection.scalar(
            sa.select(predictions.c.patient_name).where(predictions.c.id == prediction_id)
        )


def test_revision_0002_adds_the_study_tables_and_keeps_predictions(url: str) -> None:
    database = Database(url)
    try:
        database.migrate(BASELINE_REVISION)
        prediction_id = insert_rows(database)
        database.migrate("0002")
        assert database.revision() == "0002"
        assert {"studies", "study_slices"} <= table_names(database)
        assert patient_name_of(database, prediction_id) == "Legacy^Patient"
        with database.engine.begin() as connection:
            connection.execute(
                reflected(database, "studies")
                .insert()
                .values(
                    id=str(uuid.uuid4()),
                    created_at=datetime(2026, 2, 3, tzinfo=UTC),
                    model_name="ich-compact",
                    model_version="0.0.1",
                    probability=0.7,
                    label="hemorrhage",
                    threshold=0.5,
                    aggregation="max",
                    num_slices=1,
                    source="upload",
                    timings_ms={},
                    details={},
                )
            )
        with database.engine.begin() as connection:
            command.downgrade(alembic_config(connection), BASELINE_REVISION)
        assert "studies" not in table_names(database) and "study_slices" not in table_names(database)
        assert patient_name_of(database, prediction_id) == "Legacy^Patient"
    finally:
        database.dispose()


def test_revision_0003_names_the_model_card_as_the_operating_point_of_older_results(url: str) -> None:
    database = Database(url)
    try:
        database.migrate("0002")
        prediction_id = insert_rows(database)
        study_id = str(uuid.uuid4())
        with database.engine.begin() as connection:
            connection.execute(
                reflected(database, "studies")
                .insert()
                .values(
                    id=study_id,
                    created_at=datetime(2026, 2, 3, tzinfo=UTC),
                    model_name="ich-compact",
                    model_version="0.0.1",
                    probability=0.7,
                    label="hemorrhage",
                    threshold=0.5,
                    aggregation="max",
                    num_slices=1,
                    source="upload",
                    timings_ms={},
                    details={},
                )
            )
        database.migrate("0003")
        studies = reflected(database, "studies")
        with database.session() as session:
            prediction = session.get(Prediction, prediction_id)
            # The study as revision 0003 has it (the model describes the newest revision).
            study = session.execute(
                sa.select(studies.c.threshold, studies.c.operating_point).where(studies.c.id == study_id)
            ).one_or_none()
            assert prediction is not None and study is not None
            # Results decided before sites could choose keep their threshold, named as the card's.
            assert (prediction.threshold, prediction.operating_point) == (0.5, "model card default")
            assert (study.threshold, study.operating_point) == (0.5, "model card default")
        with database.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
        assert "operating_point" not in {column.name for column in reflected(database, "predictions").c}
        assert "operating_point" not in {column.name for column in reflected(database, "studies").c}
        assert patient_name_of(database, prediction_id) == "Legacy^Patient"
    finally:
        database.dispose()


def insert_study(
    database: Database,
    source: str,
    created_at: datetime,
    study_uid: str | None = "1.2.3",
    series_uid: str | None = "1.2.3.4",
    model_version: str = "0.0.1",
) -> str:
    """One study row, written with plain SQL as the service at revision 0003 wrote it."""
    study_id = str(uuid.uuid4())
    studies = sa.Table("studies", sa.MetaData(), autoload_with=database.engine)
    with database.engine.begin() as connection:
        connection.execute(
            studies.insert().values(
                id=study_id,
                created_at=created_at,
                model_name="ich-compact",
                model_version=model_version,
                probability=0.4,
                label="no_hemorrhage",
                threshold=0.5,
                aggregation="max",
                num_slices=3,
                source=source,
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                timings_ms={},
                details={},
            )
        )
    return study_id


def test_revision_0004_claims_each_pacs_analysis_once_and_keeps_duplicates(url: str) -> None:
    """Series analysed twice by earlier workers: the newest analysis gets the claim, none is lost."""
    database = Database(url)
    try:
        database.migrate("0003")
        day = datetime(2026, 3, 1, tzinfo=UTC)
        older = insert_study(database, "dicomweb", day)
        newest = insert_study(database, "dicomweb", day.replace(hour=5))
        same_moment = insert_study(database, "dicomweb", day, series_uid="1.2.3.5")
        same_moment_too = insert_study(database, "dicomweb", day, series_uid="1.2.3.5")
        other_version = insert_study(database, "dicomweb", day, model_version="0.0.2")
        insert_study(database, "upload", day.replace(hour=9))
        insert_study(database, "dicomweb", day, series_uid=None)

        database.migrate()
        assert database.revision() == HEAD
        with database.session() as session:
            claims = list(session.scalars(sa.select(AnalysisClaim)))
            assert session.scalar(sa.select(sa.func.count()).select_from(Study)) == 7
        by_series_version = {(claim.series_instance_uid, claim.model_version): claim for claim in claims}
        assert set(by_series_version) == {("1.2.3.4", "0.0.1"), ("1.2.3.5", "0.0.1"), ("1.2.3.4", "0.0.2")}
        assert by_series_version["1.2.3.4", "0.0.1"].study_id == newest
        assert by_series_version["1.2.3.5", "0.0.1"].study_id == max(same_moment, same_moment_too)
        assert by_series_version["1.2.3.4", "0.0.2"].study_id == other_version
        assert all(claim.status == "done" and claim.study_id == claim.id for claim in claims)
        assert older not in {claim.study_id for claim in claims}

        with database.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0003")
        assert "analysis_claims" not in table_names(database)
        with database.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Study)) == 7
    finally:
        database.dispose()


def test_revision_0005_reads_every_older_study_as_a_finished_job(url: str) -> None:
    database = Database(url)
    try:
        database.migrate("0004")
        study_id = insert_study(database, "upload", datetime(2026, 3, 4, tzinfo=UTC))
        database.migrate("0005")
        studies = reflected(database, "studies")
        with database.engine.connect() as connection:
            row = connection.execute(sa.select(studies).where(studies.c.id == study_id)).mappings().one()
        assert row["status"] == "done" and row["attempts"] == 0
        assert (row["progress_done"], row["progress_total"]) == (3, 3)
        assert row["failure"] is None and row["owner"] is None and row["heartbeat_at"] is None
        with database.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0004")
        assert "status" not in {column.name for column in reflected(database, "studies").c}
        with database.engine.connect() as connection:
            assert (
                connection.scalar(sa.select(sa.func.count()).select_from(reflected(database, "studies"))) == 1
            )
    finally:
        database.dispose()
