"""Files of each prediction, written atomically under the storage folder.

A prediction's files are written into a temporary folder that is renamed into place only
when every file is complete, so a reader never sees half a prediction; folders left by a
crash are removed at start-up.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from app.core.errors import NotFound, StorageUnavailable

logger = logging.getLogger(__name__)

PREDICTION_FILES = ("original.png", "overlay.png", "heatmap.png", "report.pdf")


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class FileStore:
    """Stores and reads the files of predictions, one folder per id."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.predictions = self.root / "predictions"

    def prepare(self) -> None:
        self.predictions.mkdir(parents=True, exist_ok=True)

    def is_writable(self) -> bool:
        try:
            self.prepare()
            probe = self.predictions / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
            return True
        except OSError:
            return False

    def folder(self, prediction_id: str) -> Path:
        # Ids are UUIDs checked by the caller; resolving guards against anything else.
        folder = (self.predictions / prediction_id).resolve()
        if folder.parent != self.predictions.resolve():
            raise NotFound(f"No prediction with id {prediction_id}.")
        return folder

    def save_prediction(self, prediction_id: str, files: dict[str, bytes]) -> None:
        """Write every file of a new prediction, all or nothing."""
        unknown = set(files) - set(PREDICTION_FILES)
        if unknown:
            raise ValueError(f"Unknown prediction files {sorted(unknown)}.")
        final = self.folder(prediction_id)
        staging = self.predictions / f".staging-{prediction_id}"
        try:
            self.prepare()
            staging.mkdir()
            for name, data in files.items():
                with (staging / name).open("wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
            os.replace(staging, final)
            _fsync_dir(self.predictions)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            logger.error("Could not store prediction files: %s", exc.strerror or exc)
            raise StorageUnavailable(
                "The result could not be stored (storage full or not writable); nothing was saved. "
                "Ask the administrator to check the storage folder."
            ) from exc

    def read(self, prediction_id: str, name: str) -> bytes:
        if name not in PREDICTION_FILES:
            raise NotFound(f"No file {name!r}.")
        path = self.folder(prediction_id) / name
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"Prediction {prediction_id} has no {name}.") from exc

    def exists(self, prediction_id: str, name: str) -> bool:
        return (self.folder(prediction_id) / name).is_file()

    def write(self, prediction_id: str, name: str, data: bytes) -> None:
        """Add or replace one file of an existing prediction (the lazily built report)."""
        if name not in PREDICTION_FILES:
            raise ValueError(f"Unknown prediction file {name!r}.")
        try:
            write_atomic(self.folder(prediction_id) / name, data)
        except OSError as exc:
            raise StorageUnavailable(
                "The report could not be stored; storage is full or not writable."
            ) from exc

    def delete(self, prediction_id: str) -> None:
        folder = self.folder(prediction_id)
        if folder.exists():
            # Rename first so that a crash mid-delete leaves no half folder under the id.
            trash = self.predictions / f".deleting-{prediction_id}-{uuid.uuid4().hex[:8]}"
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def stored_ids(self) -> set[str]:
        if not self.predictions.is_dir():
            return set()
        return {
            entry.name
            for entry in self.predictions.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        }

    def remove_incomplete(self, known_ids: set[str], min_age_seconds: float = 300.0) -> int:
        """Remove staging folders and folders whose database row never committed.

        Only entries older than ``min_age_seconds`` go, so a prediction another worker is
        committing right now is left alone.
        """
        removed = 0
        if not self.predictions.is_dir():
            return removed
        now = time.time()
        for entry in self.predictions.iterdir():
            if now - entry.stat().st_mtime < min_age_seconds:
                continue
            leftover = entry.name.startswith((".staging-", ".deleting-"))
            orphan = entry.is_dir() and not entry.name.startswith(".") and entry.name not in known_ids
            if leftover or orphan:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed += 1
        return removed
