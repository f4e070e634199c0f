"""Readers for the labelled brain CT collections the models learn from and are judged on.

Each reader returns a list of :class:`Sample`: an image path, a 0/1 haemorrhage label and a
group (the patient), so that splits and patient-level metrics never mix patients.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ml.data.imaging import ImageDecodeError, UnsupportedImageError, decode_image
from ml.errors import DataError, MissingDataFile

__all__ = [
    "DATASET_READERS",
    "Sample",
    "default_data_dir",
    "load_image",
    "load_raw_image",
    "read_ct_ich",
    "read_datasets",
    "read_csv_rows",
    "read_head_ct",
    "read_labelled_csv",
]


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``group`` is the patient; ``dataset`` names the collection;
    ``relative_path`` is the image path as the dataset's label file writes it."""

    path: Path
    label: int
    group: str
    dataset: str
    relative_path: str = ""

    @property
    def sample_id(self) -> str:
        """A stable id for manifests: dataset and path relative to the dataset folder."""
        relative = self.relative_path or f"{self.path.parent.name}/{self.path.name}"
        return f"{self.dataset}:{relative}"


def default_data_dir() -> Path:
    """``ICH_DATA_DIR`` when set, else ``../shared/datasets`` beside the project."""
    configured = os.environ.get("ICH_DATA_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def read_csv_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of a UTF-8 CSV file with a header line, as dictionaries.

    Raises:
        MissingDataFile: there is no such file.
        DataError: the file is not a UTF-8 CSV file.
    """
    if not csv_path.is_file():
        raise MissingDataFile(f"Label file not found: {csv_path}.")
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{csv_path} is not a UTF-8 CSV file: {error}.") from error


def _parse_label(value: str | None, where: str) -> int:
    # csv.DictReader fills the cells missing from a short row with None.
    text = (value or "").strip().lower()
    if text in {"1", "1.0", "true", "yes"}:
        return 1
    if text in {"0", "0.0", "false", "no"}:
        return 0
    raise DataError(f"{where}: label must be 0 or 1, got {value!r}.")


def read_head_ct(data_dir: Path) -> list[Sample]:
    """Kaggle head_ct: 1 image per patient, label column ``hemorrhage``."""
    root = Path(data_dir) / "head_ct"
    samples = []
    for row in read_csv_rows(root / "labels.csv"):
        path = root / row["image"]
        samples.append(
            Sample(
                path=path,
                label=_parse_label(row["hemorrhage"], str(path)),
                group=f"head_ct-{path.stem}",
                dataset="head_ct",
                relative_path=row["image"].strip(),
            )
        )
    return samples


def read_ct_ich(data_dir: Path, window: str = "brain") -> list[Sample]:
    """PhysioNet CT-ICH slices (brain or bone window); rows without an image are skipped."""
    if window not in {"brain", "bone"}:
        raise ValueError(f"window must be 'brain' or 'bone', got {window!r}.")
    root = Path(data_dir) / "ct_ich"
    samples = []
    for row in read_csv_rows(root / "labels.csv"):
        relative = row[f"{window}_path"].strip()
        if not relative:
            continue
        path = root / relative
        samples.append(
            Sample(
                path=path,
                label=_parse_label(row["any_hemorrhage"], str(path)),
                group=f"ct_ich-{row['patient_id'].strip()}",
                dataset="ct_ich",
                relative_path=relative,
            )
        )
    return samples


def read_labelled_csv(
    csv_path: Path,
    image_col: str = "image",
    label_col: str = "label",
    group_col: str | None = "group",
    dataset: str | None = None,
) -> list[Sample]:
    """Any labelled folder: a CSV with an image path (relative to the CSV), a 0/1 label and
    an optional group (patient id). Without a group column each image is its own patient."""
    csv_path = Path(csv_path)
    rows = read_csv_rows(csv_path)
    if not rows:
        raise DataError(f"{csv_path} has no rows.")
    columns = set(rows[0].keys())
    for required in (image_col, label_col):
        if required not in columns:
            raise DataError(
                f"{csv_path} has no column {required!r}; columns are {sorted(columns)}. "
                "Name the right ones with --image-col and --label-col."
            )
    use_group = group_col is not None and group_col in columns
    name = dataset or csv_path.parent.name
    samples = []
    for index, row in enumerate(rows, start=2):
        relative = (row[image_col] or "").strip()
        if not relative:
            raise DataError(f"{csv_path}, line {index}: empty {image_col!r}.")
        path = (csv_path.parent / relative).resolve()
        group = (row[group_col] or "").strip() if use_group and group_col else ""
        samples.append(
            Sample(
                path=path,
                label=_parse_label(row[label_col], f"{csv_path}, line {index}"),
                # Without a patient id the image's own path (unique, unlike its file name
                # across folders such as p1/1.png and p2/1.png) makes it its own patient.
                group=f"{name}-{group or relative}",
                dataset=name,
                relative_path=relative,
            )
        )
    return samples


DATASET_READERS = {"head_ct": read_head_ct, "ct_ich": read_ct_ich}


def read_datasets(data_dir: Path, names: Iterable[str]) -> list[Sample]:
    """Samples of several named datasets, in order."""
    samples: list[Sample] = []
    for name in names:
        if name not in DATASET_READERS:
            raise DataError(f"Unknown dataset {name!r}; known: {sorted(DATASET_READERS)}.")
        samples.extend(DATASET_READERS[name](Path(data_dir)))
    return samples


def load_image(path: Path) -> np.ndarray:
    """The pixels of an image file as the models see them: 2-D uint8 grey.

    Training, evaluation and the service all decode through :func:`ml.data.imaging.decode_image`
    (colour and alpha to grey, 16-bit stretched to 8, DICOM in the brain window), so a model is
    trained on the same pixels it is later asked about.

    Raises:
        MissingDataFile: no file at ``path``.
        DataError: the file is not a PNG, JPEG or DICOM image, or it is damaged.
    """
    data = _read_bytes(path)
    try:
        return decode_image(data).pixels
    except (ImageDecodeError, UnsupportedImageError) as error:
        raise DataError(f"Could not decode image {path}: {error}") from error


def load_raw_image(path: Path) -> np.ndarray:
    """An image file's values as stored (depth and channels kept), for masks and Hounsfield-coded
    PNGs: their values are classes or Hounsfield units, not grey levels, so nothing converts,
    windows or stretches them.

    Raises:
        MissingDataFile: no file at ``path``.
        DataError: OpenCV cannot decode the file.
    """
    image = cv2.imdecode(np.frombuffer(_read_bytes(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"Could not decode image {path}.")
    return image


def _read_bytes(path: Path) -> bytes:
    if not Path(path).is_file():
        raise MissingDataFile(f"Image not found: {path}.")
    return Path(path).read_bytes()
