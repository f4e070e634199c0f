"""Tests of :mod:`ml.data.phe_sich`: the reader, the face-up rotation, the derived blood mask, and
the removal of the scanner table's arc by the shared preprocessing."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.data.datasets import load_image
from ml.data.phe_sich import (
    FACE_UP_ROTATION,
    INTRAPARENCHYMAL,
    PheSlice,
    class_mask,
    derived_blood_mask,
    load_oedema_mask,
    load_phe_image,
    read_phe_sich,
    rotate_box,
    rotate_face_up,
    to_samples,
)
from ml.data.preprocessing import PreprocessConfig, head_mask, preprocess, to_grayscale
from ml.data.splits import patient_split

HEADER = [
    "image",
    "patient_id",
    "slice",
    "hemorrhage",
    "near_hemorrhage",
    "mask",
    "phe_px",
    "n_boxes",
    "box_xmin",
    "box_ymin",
    "box_xmax",
    "box_ymax",
]


def _write_labels(data_dir: Path, rows: list[list[str]], header: list[str] = HEADER) -> None:
    root = data_dir / "phe_sich"
    root.mkdir(parents=True)
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _synthetic_slice(shape: tuple[int, int] = (120, 160)) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A grey head with a bright square clot, and the clot's box grown by 6 pixels."""
    image = np.zeros(shape, np.uint8)
    cv2.ellipse(image, (80, 60), (70, 52), 0, 0, 360, 100, thickness=cv2.FILLED)
    cv2.ellipse(image, (80, 60), (70, 52), 0, 0, 360, 255, thickness=5)
    image[40:56, 90:110] = 200
    return image, (84, 34, 115, 61)


# The reader on small label files


def test_reader_parses_rows(tmp_path: Path) -> None:
    _write_labels(
        tmp_path,
        [
            ["images/0001_00.png", "0001", "0", "0", "1", "", "0", "0", "", "", "", ""],
            [
                "images/0001_01.png",
                "0001",
                "1",
                "1",
                "0",
                "masks/0001_01.png",
                "12",
                "1",
                "3",
                "4",
                "30",
                "40",
            ],
        ],
    )

    slices = read_phe_sich(tmp_path)

    assert [item.label for item in slices] == [0, 1]
    assert [item.near for item in slices] == [True, False]
    assert slices[0].box is None and slices[0].oedema_mask_path is None
    assert slices[1].box == (3, 4, 30, 40)
    assert slices[1].oedema_mask_path == tmp_path / "phe_sich" / "masks" / "0001_01.png"
    assert slices[1].group == "phe_sich-0001" and slices[1].slice_index == 1
    samples = to_samples(slices)
    assert [sample.dataset for sample in samples] == ["phe_sich", "phe_sich"]
    assert samples[1].sample_id == "phe_sich:images/0001_01.png"
    assert samples[1].group == "phe_sich-0001" and samples[1].label == 1


def test_reader_reports_a_missing_label_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Label file not found"):
        read_phe_sich(tmp_path)


def test_reader_names_a_missing_column(tmp_path: Path) -> None:
    _write_labels(tmp_path, [["images/a.png", "0001", "0", "0", "0"]], header=HEADER[:5])

    with pytest.raises(ValueError, match=r"lacks the columns \['mask', 'box_xmin'"):
        read_phe_sich(tmp_path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["images/a.png", "0001", "0", "2", "0", "", "0", "0", "", "", "", ""], "label must be 0 or 1"),
        (["images/a.png", "0001", "0", "1", "0", "", "0", "0", "", "", "", ""], "without a box"),
        (["images/a.png", "0001", "0", "1", "0", "", "0", "1", "9", "4", "3", "40"], "min <= max"),
        (["images/a.png", "0001", "x", "0", "0", "", "0", "0", "", "", "", ""], "slice must be an integer"),
    ],
    ids=["label", "no-box", "inverted-box", "slice"],
)
def test_reader_rejects_bad_rows_with_the_line(tmp_path: Path, row: list[str], message: str) -> None:
    _write_labels(tmp_path, [row])

    with pytest.raises(ValueError, match=f"line 2: .*{message}"):
        read_phe_sich(tmp_path)


# Orientation


@pytest.mark.parametrize("rotation", [cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE])
def test_a_turned_box_encloses_the_same_pixels(rotation: int) -> None:
    image, box = _synthetic_slice()

    turned = rotate_face_up(image, rotation)
    xmin, ymin, xmax, ymax = rotate_box(box, image.shape, rotation)

    assert turned.shape == (image.shape[1], image.shape[0])
    original = image[box[1] : box[3] + 1, box[0] : box[2] + 1]
    inside = turned[ymin : ymax + 1, xmin : xmax + 1]
    assert inside.size == original.size
    assert (inside == 200).sum() == (original == 200).sum() == 16 * 20
    # The turned box is as tight as the original: every side still touches the same grey ring.
    assert sorted(np.unique(inside).tolist()) == sorted(np.unique(original).tolist())


def test_face_up_rotation_is_a_clockwise_quarter_turn() -> None:
    marked = np.zeros((4, 6), np.uint8)
    marked[0, 0] = 1  # top left, where the face-left heads have their forehead's right side

    turned = rotate_face_up(marked)

    assert FACE_UP_ROTATION == cv2.ROTATE_90_CLOCKWISE
    assert turned.shape == (6, 4) and turned[0, 3] == 1


def test_rotate_face_up_keeps_boolean_masks_boolean() -> None:
    mask = np.zeros((3, 5), bool)
    mask[0, 4] = True

    turned = rotate_face_up(mask)

    assert turned.dtype == bool and turned[4, 2]


def test_rotation_rejects_a_half_turn() -> None:
    with pytest.raises(ValueError, match="ROTATE_90_CLOCKWISE"):
        rotate_box((0, 0, 1, 1), (4, 4), cv2.ROTATE_180)


# Derived blood mask on a synthetic slice


def test_derived_blood_mask_finds_the_clot_inside_the_box() -> None:
    image, box = _synthetic_slice()

    blood = derived_blood_mask(image, box)

    clot = np.zeros(image.shape, bool)
    clot[40:56, 90:110] = True
    assert blood.dtype == bool and blood.shape == image.shape
    assert (blood & clot).sum() / clot.sum() > 0.95
    assert not blood[~clot].any()


def test_derived_blood_mask_leaves_out_the_skull_crossing_the_box() -> None:
    image, _ = _synthetic_slice()
    # A box over the skull at the head's left edge and a clot just inside it.
    image[52:68, 20:32] = 200
    box = (2, 45, 40, 75)

    blood = derived_blood_mask(image, box)

    assert blood[52:68, 20:32].mean() > 0.9
    assert not (blood & (image == 255)).any()


def test_derived_blood_mask_is_empty_without_a_bright_region() -> None:
    image, box = _synthetic_slice()
    image[40:56, 90:110] = 100

    assert not derived_blood_mask(image, box).any()


def test_derived_blood_mask_rejects_a_box_outside_the_image() -> None:
    image, _ = _synthetic_slice()

    with pytest.raises(ValueError, match="does not lie inside"):
        derived_blood_mask(image, (10, 10, 400, 20))


# The real collection


@pytest.fixture(scope="module")
def slices(data_dir: Path) -> list[PheSlice]:
    return read_phe_sich(data_dir)


@pytest.mark.data
def test_collection_counts(slices: list[PheSlice]) -> None:
    assert len(slices) == 2775
    assert len({item.patient_id for item in slices}) == 95
    assert sum(item.box is not None for item in slices) == 585
    assert sum(item.label for item in slices) == 585
    assert sum(item.near for item in slices) == 572
    assert all(item.path.is_file() for item in slices[::50])
    # Every patient has a haemorrhage: there are no normal patients here.
    positive = {item.patient_id for item in slices if item.label}
    assert positive == {item.patient_id for item in slices}


@pytest.mark.data
def test_samples_split_by_patient(slices: list[PheSlice]) -> None:
    split = patient_split(to_samples(slices), seed=0)

    groups = [{sample.group for sample in part} for part in split.parts().values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sum(len(part) for part in split.parts().values()) == 2775


LABELLED = ["0004_14", "0015_16", "0029_15", "0070_17", "0134_09", "0144_15"]


@pytest.mark.data
@pytest.mark.parametrize("name", LABELLED)
def test_class_mask_is_derived_blood_inside_the_box(slices: list[PheSlice], name: str) -> None:
    item = next(item for item in slices if item.path.stem == name)
    assert item.box is not None

    image = load_phe_image(item)
    mask = class_mask(item)

    assert mask is not None and mask.dtype == np.uint8 and mask.shape == image.shape
    assert set(np.unique(mask).tolist()) == {0, INTRAPARENCHYMAL}
    xmin, ymin, xmax, ymax = rotate_box(item.box, (image.shape[1], image.shape[0]), item.rotation)
    inside = np.zeros(mask.shape, bool)
    inside[ymin : ymax + 1, xmin : xmax + 1] = True
    assert not mask[~inside].any()
    # The blood is a part of the box (which also holds the oedema), and brighter than its rest.
    blood = mask > 0
    assert 0.02 < blood.sum() / inside.sum() < 0.6
    assert image[blood].mean() > image[inside & ~blood].mean() + 20
    oedema = load_oedema_mask(item)
    if oedema is not None:
        assert (blood & oedema).sum() < 0.05 * blood.sum()


@pytest.mark.data
def test_class_mask_is_none_without_a_box(slices: list[PheSlice]) -> None:
    assert class_mask(slices[0]) is None


# The scanner table's arc and the shared preprocessing


def table_arc(gray: np.ndarray) -> np.ndarray:
    """Bright, thin, long components with few pixels for their bounding box: the table's arc."""
    bright = (gray > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    depth = cv2.distanceTransform(bright, cv2.DIST_L2, 3)
    arc = np.zeros(gray.shape, bool)
    for index in range(1, count):
        _, _, width, height, area = stats[index]
        component = labels == index
        long_and_sparse = max(width, height) >= 0.2 * gray.shape[0] and area <= 0.15 * width * height
        if long_and_sparse and depth[component].max() <= 0.025 * gray.shape[0]:
            arc |= component
    return arc


# Slices checked by eye: the arc stands apart from the head (no head rest touching the scalp).
ARC_SLICES = [
    "0004_14",
    "0015_12",
    "0025_08",
    "0037_10",
    "0048_11",
    "0061_11",
    "0073_09",
    "0087_18",
    "0096_15",
    "0112_13",
    "0126_12",
    "0134_09",
    "0144_13",
    "0167_13",
]


@pytest.mark.data
@pytest.mark.parametrize("name", ARC_SLICES)
def test_preprocess_removes_the_table_arc(data_dir: Path, name: str) -> None:
    image = load_image(data_dir / "phe_sich" / "images" / f"{name}.png")
    arc = table_arc(to_grayscale(image))
    assert arc.sum() > 500, "expected the table's arc on this slice"

    result = preprocess(image, PreprocessConfig(image_size=256))

    assert result.head_mask is not None
    assert not result.head_mask[arc].any()
    back = result.geometry.to_original(result.image[:, :, 0])
    assert back[arc].max() < 0.01
    # Nothing outside the head reaches the model input (beyond the blur of resampling).
    near_head = cv2.dilate(result.head_mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert back[~near_head].max() < 0.01


@pytest.mark.data
@pytest.mark.parametrize("name", ["0017_31", "0044_30"])
def test_the_arc_is_never_taken_for_a_small_head(data_dir: Path, name: str) -> None:
    image = load_image(data_dir / "phe_sich" / "images" / f"{name}.png")
    arc = table_arc(to_grayscale(image))
    assert arc.sum() > 2000

    result = preprocess(image, PreprocessConfig(image_size=256))

    assert result.head_mask is None or not result.head_mask[arc].any()


def _arc_offset(gray: np.ndarray) -> tuple[float, float]:
    """Row and column of the arc's centre less those of the head's centre."""
    arc_rows, arc_cols = np.nonzero(table_arc(gray))
    head = head_mask(gray)
    assert head is not None
    head_rows, head_cols = np.nonzero(head)
    return arc_rows.mean() - head_rows.mean(), arc_cols.mean() - head_cols.mean()


@pytest.mark.data
@pytest.mark.parametrize("name", ["0004_14", "0134_09", "0144_13"])
def test_load_phe_image_turns_the_table_to_the_bottom(slices: list[PheSlice], name: str) -> None:
    item = next(item for item in slices if item.path.stem == name)

    down, across = _arc_offset(to_grayscale(load_phe_image(item)))

    # The table lies behind the head: face up, that is below it (as in CT-ICH).
    assert down > 2 * abs(across)
