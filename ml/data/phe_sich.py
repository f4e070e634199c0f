"""PHE-SICH-CT-IDS: spontaneous intracerebral haemorrhage slices with boxes and oedema outlines.

The collection (``phe_sich/`` in the data folder) holds 2,775 brain-window slices of 95 patients,
every one of them with a haemorrhage. A labelled slice carries the annotators' box around the
haematoma and its perihaematomal oedema, and most carry an outline of the oedema; none carries a
mask of the blood itself. This module reads the label file, brings the heads to the face-up
orientation of CT-ICH, and derives a blood mask (the hyperdense region inside the box) for the
segmentation head. The derived mask is an approximation, checked by eye and against ``bhsd_seg``
(see ``docs/model.md``), and must be named as derived wherever it is used.

Licence: free for non-commercial use; a model trained on these slices inherits that restriction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ml.data.datasets import Sample, _parse_label, load_image, load_raw_image, read_csv_rows
from ml.data.preprocessing import head_mask, to_grayscale
from ml.data.segmentation import SUBTYPES
from ml.errors import DataError

__all__ = [
    "BLOOD_CONTRAST",
    "FACE_RIGHT_PATIENTS",
    "FACE_UP_ROTATION",
    "ORIGINAL_SHAPE",
    "PheSlice",
    "class_mask",
    "derived_blood_mask",
    "load_oedema_mask",
    "load_phe_image",
    "read_phe_sich",
    "rotate_box",
    "rotate_face_up",
    "to_samples",
]

DATASET = "phe_sich"
# The heads lie with the face to the left and the scanner table (the back of the head) to the
# right; a quarter turn clockwise brings the face up, as CT-ICH displays its slices.
FACE_UP_ROTATION = cv2.ROTATE_90_CLOCKWISE
# Every slice of the collection is 512 x 512 (its boxes are in these pixels).
ORIGINAL_SHAPE = (512, 512)
# Patients whose heads lie the other way (face to the right, the table's arc on the left), found
# by looking at every patient's slices: they take the opposite quarter turn.
FACE_RIGHT_PATIENTS = frozenset({"0144"})
# Blood is brighter than the slice's brain tissue by at least this much, on a 0..1 brain window
# of about 80 HU (0.10 is about 8 HU above the median brain; calibrated on bhsd_seg).
BLOOD_CONTRAST = 0.10
# Pixels at least this bright are bone (saturated in a brain window), unless enclosed by the box.
BONE_LEVEL = 0.97
# A second blob counts as blood when it holds at least this fraction of the largest blob's pixels.
SECOND_BLOB_FRACTION = 0.3
INTRAPARENCHYMAL = SUBTYPES.index("intraparenchymal") + 1

REQUIRED_COLUMNS = (
    "image",
    "patient_id",
    "slice",
    "hemorrhage",
    "near_hemorrhage",
    "mask",
    "box_xmin",
    "box_ymin",
    "box_xmax",
    "box_ymax",
)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PheSlice:
    """One PHE-SICH-CT-IDS slice, as the label file describes it (original orientation).

    Attributes:
        path: the image file.
        patient_id: the patient's id (four digits); ``group`` is ``"phe_sich-<patient_id>"``.
        slice_index: position of the slice in the patient's scan.
        label: 1 where the slice carries a box around the haemorrhage, else 0.
        near: an unlabelled slice within 3 slices of a labelled one: an uncertain negative.
        box: ``(xmin, ymin, xmax, ymax)`` around blood and oedema, inclusive pixel indices of the
            original image, or ``None``.
        oedema_mask_path: the 0/255 outline of the perihaematomal oedema (not of the blood), or
            ``None``.
        relative_path: the image path as the label file writes it.
    """

    path: Path
    patient_id: str
    slice_index: int
    label: int
    near: bool
    box: Box | None
    oedema_mask_path: Path | None
    relative_path: str = ""

    @property
    def sample_id(self) -> str:
        """A stable id for manifests, as ``ml.data.datasets.Sample`` writes it."""
        return f"phe_sich:{self.relative_path or self.path.name}"

    @property
    def group(self) -> str:
        return f"{DATASET}-{self.patient_id}"

    @property
    def rotation(self) -> int:
        """The OpenCV rotation code that brings this slice face up."""
        if self.patient_id in FACE_RIGHT_PATIENTS:
            return cv2.ROTATE_90_COUNTERCLOCKWISE
        return FACE_UP_ROTATION


def _parse_box(row: dict[str, str], where: str) -> Box | None:
    values = [row[f"box_{name}"].strip() for name in ("xmin", "ymin", "xmax", "ymax")]
    if not any(values):
        return None
    try:
        xmin, ymin, xmax, ymax = (int(float(value)) for value in values)
    except ValueError as exc:
        raise DataError(f"{where}: box must be four integers, got {values}.") from exc
    if xmin > xmax or ymin > ymax or min(xmin, ymin) < 0:
        raise DataError(f"{where}: box {values} is not (xmin, ymin, xmax, ymax) with min <= max.")
    return xmin, ymin, xmax, ymax


def read_phe_sich(data_dir: Path) -> list[PheSlice]:
    """Every slice of ``phe_sich/labels.csv``, in the file's order.

    Raises:
        FileNotFoundError: the label file is missing.
        DataError: a column is missing, or a label or box cannot be read.
    """
    root = Path(data_dir) / DATASET
    csv_path = root / "labels.csv"
    rows = read_csv_rows(csv_path)
    if not rows:
        raise DataError(f"{csv_path} has no rows.")
    missing = [column for column in REQUIRED_COLUMNS if column not in rows[0]]
    if missing:
        raise DataError(f"{csv_path} lacks the columns {missing}; columns are {sorted(rows[0])}.")
    slices = []
    for line, row in enumerate(rows, start=2):
        where = f"{csv_path}, line {line}"
        relative = row["image"].strip()
        mask = row["mask"].strip()
        try:
            slice_index = int(row["slice"])
        except ValueError as exc:
            raise DataError(f"{where}: slice must be an integer, got {row['slice']!r}.") from exc
        box = _parse_box(row, where)
        label = _parse_label(row["hemorrhage"], where)
        if label and box is None:
            raise DataError(f"{where}: a haemorrhage slice without a box.")
        slices.append(
            PheSlice(
                path=root / relative,
                patient_id=row["patient_id"].strip(),
                slice_index=slice_index,
                label=label,
                near=bool(_parse_label(row["near_hemorrhage"], where)),
                box=box,
                oedema_mask_path=root / mask if mask else None,
                relative_path=relative,
            )
        )
    return slices


def to_samples(slices: Sequence[PheSlice]) -> list[Sample]:
    """The slices as :class:`~ml.data.datasets.Sample` for the patient split and the classifier."""
    return [
        Sample(
            path=item.path,
            label=item.label,
            group=item.group,
            dataset=DATASET,
            relative_path=item.relative_path,
        )
        for item in slices
    ]


def _check_rotation(rotation: int) -> None:
    if rotation not in (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE):
        raise DataError(
            f"rotation must be cv2.ROTATE_90_CLOCKWISE or cv2.ROTATE_90_COUNTERCLOCKWISE, got {rotation!r}."
        )


def rotate_face_up(array: np.ndarray, rotation: int = FACE_UP_ROTATION) -> np.ndarray:
    """Turn an image or mask of this collection face up (``PheSlice.rotation`` says how)."""
    _check_rotation(rotation)
    if array.dtype == bool:
        return cv2.rotate(array.astype(np.uint8), rotation).astype(bool)
    return cv2.rotate(np.ascontiguousarray(array), rotation)


def rotate_box(box: Box, shape: tuple[int, int], rotation: int = FACE_UP_ROTATION) -> Box:
    """The box on the face-up grid, for an original image of ``shape`` ``(height, width)``.

    A quarter turn clockwise sends pixel ``(x, y)`` to ``(height - 1 - y, x)``; one counter-
    clockwise sends it to ``(y, width - 1 - x)``.
    """
    _check_rotation(rotation)
    height, width = shape
    xmin, ymin, xmax, ymax = box
    if rotation == cv2.ROTATE_90_CLOCKWISE:
        return height - 1 - ymax, xmin, height - 1 - ymin, xmax
    return ymin, width - 1 - xmax, ymax, width - 1 - xmin


def load_phe_image(item: PheSlice) -> np.ndarray:
    """The slice's pixels (2-D uint8), face up."""
    return rotate_face_up(load_image(item.path), item.rotation)


def load_oedema_mask(item: PheSlice) -> np.ndarray | None:
    """The oedema outline (boolean), face up, or ``None`` where the slice has none."""
    if item.oedema_mask_path is None:
        return None
    mask = load_raw_image(item.oedema_mask_path)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    return rotate_face_up(mask > 0, item.rotation)


def brain_level(gray: np.ndarray) -> float:
    """Median grey level of the brain: head pixels that are neither air/CSF nor bone."""
    head = head_mask(gray)
    region = head if head is not None else np.ones(gray.shape, bool)
    tissue = gray[region & (gray > 0.1) & (gray < 0.9)]
    if tissue.size == 0:
        raise DataError("No brain tissue found in the slice: cannot set a blood threshold.")
    return float(np.median(tissue))


def derived_blood_mask(image: np.ndarray, box: Box, contrast: float = BLOOD_CONTRAST) -> np.ndarray:
    """A blood mask derived from a box around blood and oedema: the hyperdense region inside it.

    Args:
        image: a brain-window slice (any layout :func:`~ml.data.preprocessing.to_grayscale` reads).
        box: ``(xmin, ymin, xmax, ymax)``, inclusive pixel indices on ``image``'s grid.
        contrast: how much brighter than the brain's median (0..1 window) blood must be.

    Returns:
        A boolean mask on ``image``'s grid, empty where nothing hyperdense lies in the box.
    """
    gray = to_grayscale(image)
    height, width = gray.shape
    xmin, ymin, xmax, ymax = box
    if not (0 <= xmin <= xmax < width and 0 <= ymin <= ymax < height):
        raise ValueError(f"Box {box} does not lie inside an image of shape {gray.shape}.")
    inside = np.zeros(gray.shape, bool)
    inside[ymin : ymax + 1, xmin : xmax + 1] = True
    bright = gray > brain_level(gray) + contrast
    # Bone is as bright as fresh blood in a brain window; the skull is the saturated region
    # that reaches outside the box, which blood enclosed by the box cannot do.
    saturated = (gray >= BONE_LEVEL).astype(np.uint8)
    _, bone_labels = cv2.connectedComponents(saturated, connectivity=8)
    outside_labels = np.unique(bone_labels[~inside & (saturated > 0)])
    bone = np.isin(bone_labels, outside_labels[outside_labels > 0])
    # Bone edges are blurred into a bright rim: grow the bone by two pixels before removing it.
    bone = cv2.dilate(bone.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    candidate = (bright & inside & ~bone).astype(np.uint8)
    # A small opening drops single bright pixels and thin bright rims (calcified vessels, noise).
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    opened = cv2.morphologyEx(candidate, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count <= 1:
        return np.zeros(gray.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= SECOND_BLOB_FRACTION * areas.max())
    blood = np.isin(labels, keep).astype(np.uint8)
    # Fill holes: darker pixels enclosed by the clot belong to it.
    contours, _ = cv2.findContours(blood, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(blood)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool) & inside


def class_mask(item: PheSlice) -> np.ndarray | None:
    """Class-index mask (uint8) on the face-up grid: intraparenchymal (class 2) on the derived
    blood, 0 elsewhere; ``None`` where the slice has no box."""
    if item.box is None:
        return None
    image = load_phe_image(item)
    original_shape = (image.shape[1], image.shape[0])
    blood = derived_blood_mask(image, rotate_box(item.box, original_shape, item.rotation))
    mask = np.zeros(image.shape, np.uint8)
    mask[blood] = INTRAPARENCHYMAL
    return mask
