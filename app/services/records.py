"""Reading and writing analysis records: a database row and its files, kept together.

One class serves slice predictions and studies alike: get, list, store (files first, then the
rows, all or nothing), update the details, delete (rows, then files). What differs between the
two is only the row type, the folder their files live in and the rows that belong to a study.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.core.errors import NotFound, StorageUnavailable
from app.db import Database, Prediction, Study, list_records
from app.services.storage import FileKind, FileStore

logger = logging.getLogger(__name__)

Row = TypeVar("Row", Prediction, Study)

DATABASE_UNREACHABLE = (
    "The result could not be saved because the database is not reachable; nothing was "
    "saved. Try again, or ask the administrator to check the database."
)


class Records(Generic[Row]):
    """The rows of one kind of analysis (``Prediction`` or ``Study``) and the files stored with them.

    Args:
        database: where the rows live.
        files: where the files live.
        model: the row class.
        kind: the kind of record: its file folder, and its noun for the ``NotFound`` detail.
        dependents: row classes with a ``study_id`` column deleted with the record (a study's slices
            and its PACS claim).
    """

    def __init__(
        self,
        database: Database,
        files: FileStore,
        model: type[Row],
        kind: FileKind,
        dependents: Sequence[Any] = (),
    ) -> None:
        self.database = database
        self.files = files
        self.model: type[Row] = model
        self.kind = kind
        self.dependents = tuple(dependents)

    def _not_found(self, record_id: str) -> NotFound:
        return NotFound(f"No {self.kind.noun} with id {record_id}.")

    def get(self, record_id: str) -> Row:
        """The row with this id.

        Raises:
            NotFound: there is none.
        """
        with self.database.session() as session:
            row = session.get(self.model, record_id)
        if row is None:
            raise self._not_found(record_id)
        return row

    def where(self, *conditions: Any, order_by: Any = None) -> list[Row]:
        """Rows matching SQLAlchemy conditions, in the given order."""
        query = select(self.model).where(*conditions)
        if order_by is not None:
            query = query.order_by(order_by)
        with self.database.session() as session:
            return list(session.scalars(query))

    def dependent_rows(self, dependent: Any, record_id: str, order_by: Any) -> builtins.list[Any]:
        """The rows of a ``dependents`` class that belong to one record (a study's slices), in order."""
        query = select(dependent).where(dependent.study_id == record_id).order_by(order_by)
        with self.database.session() as session:
            return builtins.list(session.scalars(query))

    def list(
        self,
        page: int = 1,
        page_size: int = 20,
        label: str | None = None,
        patient_id: str | None = None,
        positives_first: bool = False,
        conditions: tuple[Any, ...] = (),
    ) -> tuple[list[Row], int]:
        """One page of rows (matching SQLAlchemy ``conditions``), newest first (haemorrhage first on
        request), and how many there are."""
        return list_records(
            self.database, self.model, page, page_size, label, patient_id, positives_first, conditions
        )

    def store(self, record_id: str, files: dict[str, bytes], add_rows: Callable[[Session], None]) -> None:
        """Write the files, then the rows in one transaction; on any failure neither stays.

        Raises:
            StorageUnavailable: the database could not be written.
        """
        self.files.save(record_id, files, self.kind)
        try:
            with self.database.session() as session:
                add_rows(session)
        except SQLAlchemyError as exc:
            self.files.delete(record_id, self.kind)
            logger.error("Could not store the %s rows: %s", self.kind.noun, type(exc).__name__)
            raise StorageUnavailable(DATABASE_UNREACHABLE) from exc
        except BaseException:
            self.files.delete(record_id, self.kind)
            raise

    def update_details(self, record_id: str, **values: Any) -> Row:
        """Add entries to a record's details (what was stored back to the PACS, for example)."""
        with self.database.session() as session:
            row = session.get(self.model, record_id)
            if row is None:
                raise self._not_found(record_id)
            row.details = {**(row.details or {}), **values}
        return row

    def delete(self, record_id: str) -> None:
        """Delete the row, the rows that depend on it, and then its files."""
        with self.database.session() as session:
            row = session.get(self.model, record_id)
            if row is None:
                raise self._not_found(record_id)
            for dependent in self.dependents:
                session.execute(delete(dependent).where(dependent.study_id == record_id))
            session.delete(row)
        self.files.delete(record_id, self.kind)

    def read_file(self, record_id: str, name: str) -> bytes:
        """A stored file of a record that exists.

        Raises:
            NotFound: no such record, or no such file.
        """
        self.get(record_id)
        return self.files.read(record_id, name, self.kind)

    def cached_file(self, record_id: str, name: str, make: Callable[[], bytes]) -> bytes:
        """A file made on first request (a PDF report) and kept; ``make`` reads the record itself."""
        if not self.files.exists(record_id, name, self.kind):
            self.files.write(record_id, name, make(), self.kind)
        return self.files.read(record_id, name, self.kind)
