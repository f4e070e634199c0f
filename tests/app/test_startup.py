"""The lifespan's storage step: the ids stored in the database, and the result folders it keeps."""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.core.config import Settings
from app.db import Prediction, Study, stored_ids
from app.main import open_storage
from app.services.storage import PREDICTIONS, STUDIES

ANALYSIS = {
    "model_name": "ich-compact",
    "model_version": "0.0.1",
    "probability": 0.2,
    "label": "no_hemorrhage",
}


def _old_folder(path: Path) -> Path:
    """A result folder older than the five minutes a committing worker is given."""
    path.mkdir(parents=True)
    long_ago = time.time() - 3600
    os.utime(path, (long_ago, long_ago))
    return path


def test_stored_ids_name_every_row_of_their_table(settings: Settings) -> None:
    database, _ = open_storage(settings)
    try:
        assert stored_ids(database, Prediction) == set() and stored_ids(database, Study) == set()
        with database.session() as session:
            session.add(
                Prediction(
                    id="p-1", threshold=0.5, source_format="png", image_width=4, image_height=4, **ANALYSIS
                )
            )
            session.add(
                Study(id="s-1", threshold=0.5, aggregation="max", num_slices=2, source="upload", **ANALYSIS)
            )
        assert stored_ids(database, Prediction) == {"p-1"}
        assert stored_ids(database, Study) == {"s-1"}
    finally:
        database.dispose()


def test_open_storage_removes_only_the_folders_without_a_row(settings: Settings) -> None:
    database, files = open_storage(settings)
    try:
        with database.session() as session:
            session.add(
                Prediction(
                    id="kept", threshold=0.5, source_format="png", image_width=4, image_height=4, **ANALYSIS
                )
            )
            session.add(
                Study(
                    id="kept-study",
                    threshold=0.5,
                    aggregation="max",
                    num_slices=2,
                    source="upload",
                    **ANALYSIS,
                )
            )
    finally:
        database.dispose()
    kept = _old_folder(files.base(PREDICTIONS) / "kept")
    orphan = _old_folder(files.base(PREDICTIONS) / "orphan")
    kept_study = _old_folder(files.base(STUDIES) / "kept-study")
    orphan_study = _old_folder(files.base(STUDIES) / "orphan-study")
    recent = files.base(PREDICTIONS) / "being-committed"
    recent.mkdir()

    database, _ = open_storage(settings)
    database.dispose()

    assert kept.is_dir() and kept_study.is_dir() and recent.is_dir()
    assert not orphan.exists() and not orphan_study.exists()
