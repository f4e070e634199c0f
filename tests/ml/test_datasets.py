"""Tests of the dataset readers in :mod:`ml.data.datasets`, on the real label files and on small CSVs."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from ml.data.datasets import (
    Sample,
    default_data_dir,
    load_image,
    load_raw_image,
    read_ct_ich,
    read_datasets,
    read_head_ct,
    read_labelled_csv,
)

DATA_DIR = Path(
    os.environ.get("ICH_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
)

needs_data = pytest.mark.skipif(
    not DATA_DIR.is_dir() and not os.environ.get("CI"), reason=f"datasets not found at {DATA_DIR}"
)
real_data = [pytest.mark.slow, needs_data]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


class TestHeadCt:
    pytestmark = real_data

    def test_counts_labels_and_groups(self) -> None:
        samples = read_head_ct(DATA_DIR)
        assert len(samples) == 160
        assert sum(sample.label for sample in samples) == 80
        assert {sample.label for sample in samples} == {0, 1}
        # One image per patient: every sample is its own group.
        assert len({sample.group for sample in samples}) == 160
        assert {sample.dataset for sample in samples} == {"head_ct"}

    def test_paths_exist_and_ids_are_relative(self) -> None:
        samples = read_head_ct(DATA_DIR)
        assert all(sample.path.is_file() for sample in samples)
        assert all(sample.path.suffix == ".png" for sample in samples)
        ids = [sample.sample_id for sample in samples]
        assert len(set(ids)) == len(ids)
        assert "head_ct:images/000.png" in ids
        assert not any(str(DATA_DIR) in sample_id for sample_id in ids)

    def test_labels_match_the_label_file(self) -> None:
        with (DATA_DIR / "head_ct" / "labels.csv").open(newline="") as handle:
            expected = {row["image"]: int(row["hemorrhage"]) for row in csv.DictReader(handle)}
        samples = read_head_ct(DATA_DIR)
        assert {f"images/{sample.path.name}": sample.label for sample in samples} == expected


class TestCtIch:
    pytestmark = real_data

    def test_brain_counts_labels_and_groups(self) -> None:
        samples = read_ct_ich(DATA_DIR)
        assert len(samples) == 1895
        assert sum(sample.label for sample in samples) == 220
        groups = {sample.group for sample in samples}
        assert len(groups) == 62
        positive_patients = {sample.group for sample in samples if sample.label == 1}
        assert len(positive_patients) == 27
        assert {sample.dataset for sample in samples} == {"ct_ich"}

    def test_brain_paths_exist_and_ids_are_unique(self) -> None:
        samples = read_ct_ich(DATA_DIR)
        assert all(sample.path.is_file() for sample in samples)
        assert all(sample.path.parent.name == "brain" for sample in samples)
        # Slice file names repeat across patients (1.jpg, 2.jpg ...); ids must not.
        ids = [sample.sample_id for sample in samples]
        assert len(set(ids)) == len(ids)
        assert "ct_ich:Patients_CT/050/brain/1.jpg" in ids

    def test_rows_without_an_image_are_skipped(self) -> None:
        with (DATA_DIR / "ct_ich" / "labels.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 1916
        missing_brain = sum(1 for row in rows if not row["brain_path"].strip())
        assert missing_brain == 1916 - 1895
        samples = read_ct_ich(DATA_DIR)
        # An empty path would otherwise resolve to the dataset folder itself.
        assert all(sample.path != DATA_DIR / "ct_ich" for sample in samples)
        assert len(samples) == len(rows) - missing_brain

    def test_bone_window_variant(self) -> None:
        with (DATA_DIR / "ct_ich" / "labels.csv").open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if row["bone_path"].strip()]
        samples = read_ct_ich(DATA_DIR, window="bone")
        assert len(samples) == len(rows)
        assert sum(sample.label for sample in samples) == sum(int(row["any_hemorrhage"]) for row in rows)
        assert all(sample.path.parent.name == "bone" for sample in samples)
        assert all(sample.path.is_file() for sample in samples)
        assert len({sample.group for sample in samples}) == 62

    def test_unknown_window_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="'soft'"):
            read_ct_ich(DATA_DIR, window="soft")


class TestReadDatasets:
    pytestmark = real_data

    def test_reads_named_datasets_in_order(self) -> None:
        samples = read_datasets(DATA_DIR, ["head_ct", "ct_ich"])
        assert len(samples) == 160 + 1895
        assert [sample.dataset for sample in samples[:160]] == ["head_ct"] * 160
        assert {sample.dataset for sample in samples[160:]} == {"ct_ich"}


def test_read_datasets_rejects_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'") as raised:
        read_datasets(tmp_path, ["mnist"])
    assert "ct_ich" in str(raised.value) and "head_ct" in str(raised.value)


def test_missing_label_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="labels.csv"):
        read_head_ct(tmp_path)


class TestReadLabelledCsv:
    def test_paths_are_relative_to_the_csv(self, tmp_path: Path) -> None:
        folder = tmp_path / "external"
        folder.mkdir()
        csv_path = _write_csv(
            folder / "labels.csv",
            ["image", "label", "group"],
            [["scans/a.png", "1", "p1"], ["scans/b.png", "0", "p1"], ["../c.png", "0", "p2"]],
        )
        samples = read_labelled_csv(csv_path)
        assert [sample.path for sample in samples] == [
            (folder / "scans" / "a.png").resolve(),
            (folder / "scans" / "b.png").resolve(),
            (tmp_path / "c.png").resolve(),
        ]
        assert [sample.label for sample in samples] == [1, 0, 0]
        assert [sample.group for sample in samples] == ["external-p1", "external-p1", "external-p2"]
        assert {sample.dataset for sample in samples} == {"external"}
        assert samples[0].sample_id == "external:scans/a.png"

    def test_custom_column_names_and_dataset_name(self, tmp_path: Path) -> None:
        csv_path = _write_csv(
            tmp_path / "hospital.csv",
            ["file", "bleed", "patient", "other"],
            [["x.jpg", "yes", "A", "z"], ["y.jpg", "false", "B", "z"], ["z.jpg", "1.0", "A", "z"]],
        )
        samples = read_labelled_csv(
            csv_path, image_col="file", label_col="bleed", group_col="patient", dataset="site_b"
        )
        assert [sample.label for sample in samples] == [1, 0, 1]
        assert [sample.group for sample in samples] == ["site_b-A", "site_b-B", "site_b-A"]
        assert [sample.path.name for sample in samples] == ["x.jpg", "y.jpg", "z.jpg"]
        assert {sample.dataset for sample in samples} == {"site_b"}

    def test_without_group_column_each_image_is_its_own_patient(self, tmp_path: Path) -> None:
        csv_path = _write_csv(
            tmp_path / "labels.csv",
            ["image", "label"],
            [["p1/1.png", "1"], ["p2/1.png", "0"], ["p1/2.png", "0"], ["p1/1.jpg", "1"]],
        )
        samples = read_labelled_csv(csv_path)
        groups = [sample.group for sample in samples]
        # Same file name in different folders, or same stem with another suffix, are other images.
        assert len(set(groups)) == len(samples) == 4
        assert len({sample.sample_id for sample in samples}) == 4

    def test_group_column_none_ignores_an_existing_column(self, tmp_path: Path) -> None:
        csv_path = _write_csv(
            tmp_path / "labels.csv", ["image", "label", "group"], [["a.png", "1", "g"], ["b.png", "0", "g"]]
        )
        samples = read_labelled_csv(csv_path, group_col=None)
        assert len({sample.group for sample in samples}) == 2

    @pytest.mark.parametrize(
        ("header", "missing"),
        [(["img", "label"], "image"), (["image", "hemorrhage"], "label")],
    )
    def test_missing_required_column_names_the_columns(
        self, tmp_path: Path, header: list[str], missing: str
    ) -> None:
        csv_path = _write_csv(tmp_path / "labels.csv", header, [["a.png", "1"]])
        with pytest.raises(ValueError) as raised:
            read_labelled_csv(csv_path)
        message = str(raised.value)
        assert repr(missing) in message
        for column in header:
            assert repr(column) in message

    @pytest.mark.parametrize("bad", ["2", "maybe", "", "0.5"])
    def test_bad_label_names_the_line(self, tmp_path: Path, bad: str) -> None:
        csv_path = _write_csv(tmp_path / "labels.csv", ["image", "label"], [["a.png", "1"], ["b.png", bad]])
        with pytest.raises(ValueError, match="line 3: label must be 0 or 1") as raised:
            read_labelled_csv(csv_path)
        assert repr(bad) in str(raised.value)

    def test_empty_image_cell_is_rejected(self, tmp_path: Path) -> None:
        csv_path = _write_csv(tmp_path / "labels.csv", ["image", "label"], [["a.png", "1"], [" ", "0"]])
        with pytest.raises(ValueError, match="line 3: empty 'image'"):
            read_labelled_csv(csv_path)

    def test_csv_without_rows_is_rejected(self, tmp_path: Path) -> None:
        csv_path = _write_csv(tmp_path / "labels.csv", ["image", "label"], [])
        with pytest.raises(ValueError, match="no rows"):
            read_labelled_csv(csv_path)


class TestLoadImage:
    pytestmark = real_data

    def test_png_keeps_its_rgb_encoded_grey_as_stored(self) -> None:
        image = load_raw_image(DATA_DIR / "head_ct" / "images" / "000.png")
        assert image.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3
        assert 134 <= min(image.shape[:2]) and max(image.shape[:2]) <= 957
        # RGB-encoded greyscale: the three channels agree.
        assert np.array_equal(image[..., 0], image[..., 1])
        assert np.array_equal(image[..., 0], image[..., 2])

    def test_png_rgb_encoded_grey_is_read_as_its_grey(self) -> None:
        path = DATA_DIR / "head_ct" / "images" / "000.png"
        image = load_image(path)
        assert image.dtype == np.uint8 and image.ndim == 2
        assert np.array_equal(image, load_raw_image(path)[..., 0])

    def test_mask_values_are_kept(self) -> None:
        mask = load_raw_image(DATA_DIR / "bhsd_seg" / "masks" / "bhsd_121025.png")
        assert mask.dtype == np.uint8 and mask.ndim == 2
        # Class 4 (subarachnoid) on 322 pixels, as the label file says; nothing stretched.
        assert set(np.unique(mask).tolist()) == {0, 4}
        assert int((mask == 4).sum()) == 322

    def test_jpeg_is_650_square_greyscale(self) -> None:
        image = load_image(DATA_DIR / "ct_ich" / "Patients_CT" / "050" / "brain" / "1.jpg")
        assert image.dtype == np.uint8
        assert image.shape == (650, 650)
        assert image.max() > image.min()


def test_load_image_rejects_non_images(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="Could not decode image"):
        load_image(path)
    with pytest.raises(ValueError, match="Could not decode image"):
        load_raw_image(path)


def test_load_image_names_a_missing_file(tmp_path: Path) -> None:
    for reader in (load_image, load_raw_image):
        with pytest.raises(FileNotFoundError, match="Image not found"):
            reader(tmp_path / "absent.png")


def test_default_data_dir_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ICH_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path


def test_default_data_dir_falls_back_beside_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICH_DATA_DIR", raising=False)
    project_root = Path(__file__).resolve().parents[2]
    assert default_data_dir() == project_root.parent / "shared" / "datasets"


def test_sample_id_without_relative_path_uses_folder_and_name() -> None:
    sample = Sample(path=Path("/data/site/images/7.png"), label=0, group="site-7", dataset="site")
    assert sample.sample_id == "site:images/7.png"
