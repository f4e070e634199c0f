"""Files of each prediction and each study, written atomically under the storage folder.

A prediction's (or a study's) files are written into a temporary folder that is renamed into place only
when every file is complete, so a reader never sees half a prediction; folders left by a
crash are removed at start-up.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import NotFound, StorageUnavailable

logger = logging.getLogger(__name__)

PREDICTION_FILES = ("original.png", "overlay.png", "heatmap.png", "mask.png", "contours.png", "report.pdf")


@dataclass(frozen=True)
class FileKind:
    """One kind of stored result: its folder under the storage root and the file names it may hold."""

    folder: str
    noun: str
    names: re.Pattern[str]

    def allows(self, name: str) -> bool:
        return self.names.fullmatch(name) is not None


PREDICTIONS = FileKind(
    "predictions", "prediction", re.compile("|".join(re.escape(n) for n in PREDICTION_FILES))
)
# A study: the windowed slice, its overlay and, when segmented, its class mask and outlines for
# every slice (numbered in anatomical order), and the lazily built report.
STUDIES = FileKind("studies", "study", re.compile(r"(slice|overlay|mask|contours)_\d{3,4}\.png|report\.pdf"))
# What a queued study job is analysed from, kept until it is done or failed so that a job left by
# a stopped process can be taken up again: the uploaded files in order and what was asked (job.json).
JOB_INPUTS = FileKind("jobs", "study job", re.compile(r"input_\d{4,5}|job\.json"))


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
    """Stores and reads the files of predictions and studies, one folder per id.

    Every method works on predictions unless ``kind=STUDIES`` is passed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.predictions = self.root / PREDICTIONS.folder
        self.studies = self.root / STUDIES.folder

    def base(self, kind: FileKind = PREDICTIONS) -> Path:
        return self.root / kind.folder

    def prepare(self) -> None:
        for kind in (PREDICTIONS, STUDIES, JOB_INPUTS):
            self.base(kind).mkdir(parents=True, exist_ok=True)

    def is_writable(self) -> bool:
        try:
            self.prepare()
            probe = self.predictions / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
            return True
        except OSError:
            return False

    def folder(self, item_id: str, kind: FileKind = PREDICTIONS) -> Path:
        # Ids are UUIDs checked by the caller; resolving guards against anything else.
        base = self.base(kind)
        folder = (base / item_id).resolve()
        if folder.parent != base.resolve():
            raise NotFound(f"No {kind.noun} with id {item_id}.")
        return folder

    def save_prediction(self, prediction_id: str, files: dict[str, bytes]) -> None:
        """Write every file of a new prediction, all or nothing."""
        self.save(prediction_id, files, PREDICTIONS)

    def save(self, item_id: str, files: dict[str, bytes], kind: FileKind = PREDICTIONS) -> None:
        """Write every file of a new prediction or study, all or nothing."""
        unknown = sorted(name for name in files if not kind.allows(name))
        if unknown:
            raise ValueError(f"Unknown {kind.noun} files {unknown}.")
        base = self.base(kind)
        final = self.folder(item_id, kind)
        staging = base / f".staging-{item_id}"
        try:
            self.prepare()
            staging.mkdir()
            for name, data in files.items():
                with (staging / name).open("wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
            os.replace(staging, final)
            _fsync_dir(base)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            logger.error("Could not store %s files: %s", kind.noun, exc.strerror or exc)
            raise StorageUnavailable(
                "The result could not be stored (storage full or not writable); nothing was saved. "
                "Ask the administrator to check the storage folder."
            ) from exc

    def read(self, item_id: str, name: str, kind: FileKind = PREDICTIONS) -> bytes:
        if not kind.allows(name):
            raise NotFound(f"No file {name!r}.")
        path = self.folder(item_id, kind) / name
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"{kind.noun.capitalize()} {item_id} has no {name}.") from exc

    def exists(self, item_id: str, name: str, kind: FileKind = PREDICTIONS) -> bool:
        return (self.folder(item_id, kind) / name).is_file()

    def write(self, item_id: str, name: str, data: bytes, kind: FileKind = PREDICTIONS) -> None:
        """Add or replace one file of an existing prediction or study (the lazily built report)."""
        if not kind.allows(name):
            raise ValueError(f"Unknown {kind.noun} file {name!r}.")
        try:
            write_atomic(self.folder(item_id, kind) / name, data)
        except OSError as exc:
            raise StorageUnavailable(
                "The report could not be stored; storage is full or not writable."
            ) from exc

    def delete(self, item_id: str, kind: FileKind = PREDICTIONS) -> None:
        """Remove the files of an id, and any folder an interrupted save left staged for it."""
        folder = self.folder(item_id, kind)
        shutil.rmtree(self.base(kind) / f".staging-{item_id}", ignore_errors=True)
        if folder.exists():
            # Rename first so that a crash mid-delete leaves no half folder under the id.
            trash = self.base(kind) / f".deleting-{item_id}-{uuid.uuid4().hex[:8]}"
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def remove_incomplete(
        self, known_ids: set[str], min_age_seconds: float = 300.0, kind: FileKind = PREDICTIONS
    ) -> int:
        """Remove staging folders and folders whose database row never committed.

        Only entries older than ``min_age_seconds`` go, so a result another worker is
        committing right now is left alone.
        """
        removed = 0
        base = self.base(kind)
        if not base.is_dir():
            return removed
        now = time.time()
        for entry in base.iterdir():
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
