"""Database models and sessions (SQLAlchemy; SQLite by default, PostgreSQL by URL).

The schema is managed by Alembic (``app/migrations``): ``Database.migrate()`` brings any
database, empty or older, to the newest revision.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The revision whose schema equals what the service created before it used migrations.
BASELINE_REVISION = "0001"
# What decided every result stored before a site could choose its operating point.
CARD_OPERATING_POINT = "model card default"
# Any fixed number: PostgreSQL advisory lock that lets one process at a time migrate.
MIGRATION_LOCK_KEY = 0x1C4D_0001
# The status of a study whose analysis is finished and stored (every study stored before jobs).
JOB_DONE = "done"
# The label of a study whose result is not stored yet: its result columns hold placeholders.
PENDING_LABEL = "pending"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("Datetimes stored must be timezone-aware.")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class AnalysisColumns:
    """The columns a slice prediction and a study share: the result, its model and the patient's fields."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(50))
    probability: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(20), index=True)
    threshold: Mapped[float] = mapped_column(Float)
    # Where the threshold came from, as it was when the result was decided.
    operating_point: Mapped[str] = mapped_column(Text, server_default=CARD_OPERATING_POINT)
    patient_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    patient_id: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    study_description: Mapped[str | None] = mapped_column(String(300), nullable=True)
    study_date: Mapped[str | None] = mapped_column(String(20), nullable=True)
    requesting_clinician: Mapped[str | None] = mapped_column(String(200), nullable=True)
    timings_ms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Prediction(AnalysisColumns, Base):
    """One analysed slice. Its files live in the storage folder under its id."""

    __tablename__ = "predictions"

    source_format: Mapped[str] = mapped_column(String(10))
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)


class Study(AnalysisColumns, Base):
    """One analysed CT series: the study-level result. Its files live under storage/studies/<id>."""

    __tablename__ = "studies"

    aggregation: Mapped[str] = mapped_column(String(20))
    num_slices: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(10))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The study as a job (app/services/jobs/): queued, running, done or failed. Until it is done
    # the result columns hold placeholders and only these describe the study.
    status: Mapped[str] = mapped_column(String(10), default=JOB_DONE, server_default=JOB_DONE, index=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StudySlice(Base):
    """One slice of a study, in anatomical order (``slice_index`` 0 is the lowest position)."""

    __tablename__ = "study_slices"

    study_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    slice_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    position_mm: Mapped[float | None] = mapped_column(Float, nullable=True)
    probability: Mapped[float] = mapped_column(Float)


class AnalysisClaim(Base):
    """The one analysis of a PACS series by one model version, claimed before it starts.

    The unique constraint lets a single worker or replica hold a (study, series, model, version):
    the first insert wins. ``status`` is ``running`` while ``owner`` analyses and stores the results
    back (``heartbeat_at`` shows it is alive), ``done`` once they are in the PACS, and ``failed``
    when the attempt ended in an error; a ``failed`` claim, or a ``running`` one whose heartbeat is
    older than the claim timeout, may be taken over. ``study_id`` is set in the transaction that
    stores the study's rows.
    """

    __tablename__ = "analysis_claims"
    __table_args__ = (
        UniqueConstraint(
            "study_instance_uid",
            "series_instance_uid",
            "model_name",
            "model_version",
            name="uq_analysis_claims_series_model",
        ),
        UniqueConstraint("study_id", name="uq_analysis_claims_study_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(10))
    owner: Mapped[str] = mapped_column(String(100))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    study_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("studies.id", ondelete="CASCADE"), nullable=True
    )


class ApiKey(Base):
    """An API key, stored as its SHA-256 digest; ``prefix`` identifies it to people."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Database:
    """Engine and session factory for one database URL."""

    def __init__(self, url: str) -> None:
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"check_same_thread": False, "timeout": 30}
        self.url = url
        # hide_parameters: error messages never carry row values such as patient names.
        self.engine: Engine = create_engine(
            url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True
        )
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision``, one process at a time.

        A database created before the service used migrations (tables but no
        ``alembic_version``) is first stamped with the baseline revision, so its rows stay.
        """
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        with self._migration_lock(), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends; other workers and replicas wait here.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config = alembic_config(connection)
            tables = set(inspect(connection).get_table_names())
            if "alembic_version" not in tables and "predictions" in tables:
                logger.info("Database made before migrations: marking it as revision %s.", BASELINE_REVISION)
                command.stamp(config, BASELINE_REVISION)
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(config, revision)
            after = MigrationContext.configure(connection).get_current_revision()
        if after != before:
            logger.info("Database schema upgraded from revision %s to %s.", before or "(empty)", after)

    def revision(self) -> str | None:
        """The schema revision the database is at, or ``None`` for an unversioned database."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """An exclusive file lock beside an SQLite database file (PostgreSQL locks in the server)."""
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database or database == ":memory:":
            yield
            return
        import fcntl

        lock_path = Path(f"{database}.migrate-lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic's configuration in code: the migrations folder and a connection (or a URL for --sql)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    config.attributes["url"] = url
    return config


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; synchronous=FULL keeps commits on disk.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def list_records(
    database: Database,
    model: type[Prediction] | type[Study],
    page: int,
    page_size: int,
    label: str | None = None,
    patient_id: str | None = None,
    positives_first: bool = False,
    conditions: tuple[Any, ...] = (),
) -> tuple[list[Any], int]:
    """One page of predictions or studies, newest first (haemorrhage first on request), and the total."""
    query = select(model).where(*conditions)
    if label:
        query = query.where(model.label == label)
    if patient_id:
        query = query.where(model.patient_id.contains(patient_id))
    order: list[Any] = [model.created_at.desc(), model.id]
    if positives_first:
        # "hemorrhage" sorts before "no_hemorrhage" and "out_of_scope".
        order.insert(0, model.label.asc())
    with database.session() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        items = list(session.scalars(query.order_by(*order).offset((page - 1) * page_size).limit(page_size)))
    return items, int(total)


def stored_ids(database: Database, model: type[Prediction] | type[Study]) -> set[str]:
    """The id of every stored prediction or study (start-up keeps only their result folders)."""
    with database.session() as session:
        return set(session.scalars(select(model.id)))
