"""Tests of patient-level splits and their manifests, on the real head_ct and ct_ich samples."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from ml.data.datasets import Sample, read_ct_ich, read_head_ct
from ml.data.splits import Split, load_manifest, patient_split, select, write_manifest

DATA_DIR = Path(
    os.environ.get("ICH_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DATA_DIR.is_dir() and not os.environ.get("CI"), reason=f"datasets not found at {DATA_DIR}"
    ),
]


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return read_head_ct(DATA_DIR) + read_ct_ich(DATA_DIR)


@pytest.fixture(scope="module")
def split(samples: list[Sample]) -> Split:
    return patient_split(samples, validation_fraction=0.15, test_fraction=0.15, seed=7)


def _patients(members: list[Sample]) -> set[str]:
    return {sample.group for sample in members}


def _patient_labels(members: list[Sample]) -> dict[str, int]:
    labels: dict[str, int] = defaultdict(int)
    for sample in members:
        labels[sample.group] = max(labels[sample.group], sample.label)
    return dict(labels)


def test_no_patient_is_in_two_splits(split: Split) -> None:
    train, validation, test = (_patients(part) for part in (split.train, split.validation, split.test))
    assert not train & validation
    assert not train & test
    assert not validation & test


def test_every_sample_is_in_exactly_one_split(samples: list[Sample], split: Split) -> None:
    combined = split.train + split.validation + split.test
    assert len(combined) == len(samples)
    assert sorted(combined, key=lambda s: str(s.path)) == sorted(samples, key=lambda s: str(s.path))
    assert len({sample.path for sample in combined}) == len(samples)


def test_same_seed_gives_the_same_split(samples: list[Sample], split: Split) -> None:
    again = patient_split(samples, validation_fraction=0.15, test_fraction=0.15, seed=7)
    assert again == split


def test_different_seed_gives_a_different_split(samples: list[Sample], split: Split) -> None:
    other = patient_split(samples, validation_fraction=0.15, test_fraction=0.15, seed=8)
    assert _patients(other.test) != _patients(split.test)
    assert _patients(other.validation) != _patients(split.validation)


@pytest.mark.parametrize("dataset", ["head_ct", "ct_ich"])
def test_each_split_has_positive_and_negative_patients_of_each_dataset(split: Split, dataset: str) -> None:
    for name, members in split.parts().items():
        labels = _patient_labels([sample for sample in members if sample.dataset == dataset])
        assert 1 in labels.values(), f"{name} has no positive {dataset} patient"
        assert 0 in labels.values(), f"{name} has no negative {dataset} patient"
        slice_labels = {sample.label for sample in members if sample.dataset == dataset}
        assert slice_labels == {0, 1}, f"{name} lacks positive or negative {dataset} images"


@pytest.mark.parametrize(("validation_fraction", "test_fraction"), [(0.15, 0.15), (0.1, 0.25), (0.3, 0.2)])
def test_fractions_of_patients_are_roughly_as_asked(
    samples: list[Sample], validation_fraction: float, test_fraction: float
) -> None:
    result = patient_split(samples, validation_fraction, test_fraction, seed=3)
    all_patients = _patient_labels(samples)
    asked = {"train": 1 - validation_fraction - test_fraction, "validation": validation_fraction}
    asked["test"] = test_fraction
    for dataset in ("head_ct", "ct_ich"):
        for label in (0, 1):
            stratum = {p for p, v in all_patients.items() if v == label and p.startswith(dataset)}
            for name, members in result.parts().items():
                share = len(_patients(members) & stratum) / len(stratum)
                # Patients are whole: each stratum is off by at most one patient's rounding.
                assert share == pytest.approx(asked[name], abs=1.0 / len(stratum) + 1e-9), (
                    f"{name} holds {share:.3f} of {dataset} label-{label} patients, asked {asked[name]}"
                )


@pytest.mark.parametrize(
    ("validation_fraction", "test_fraction"),
    [(0.0, 0.15), (0.15, 0.0), (1.0, 0.15), (0.15, 1.0), (-0.1, 0.2), (0.5, 0.5), (0.6, 0.5)],
)
def test_invalid_fractions_are_rejected(
    samples: list[Sample], validation_fraction: float, test_fraction: float
) -> None:
    with pytest.raises(ValueError, match="fraction"):
        patient_split(samples, validation_fraction, test_fraction)


def test_manifest_round_trip(samples: list[Sample], split: Split, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "split.json"
    write_manifest(split, path, seed=7)
    manifest = load_manifest(path)
    assert set(manifest) == {"train", "validation", "test"}
    for name, members in split.parts().items():
        assert manifest[name] == _patients(members)
        assert select(samples, manifest[name]) == members


def test_manifest_holds_ids_only(split: Split, tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    write_manifest(split, path, seed=7)
    text = path.read_text(encoding="utf-8")
    payload = json.loads(text)
    assert payload["seed"] == 7
    assert str(DATA_DIR) not in text
    assert str(DATA_DIR.resolve()) not in text
    for name, members in split.parts().items():
        images = payload[name]["images"]
        # One id per image, none of them an absolute path.
        assert len(images) == len(set(images)) == len(members)
        assert not any(image.split(":", 1)[1].startswith("/") for image in images)
        assert all(image.split(":", 1)[0] in {"head_ct", "ct_ich"} for image in images)
        assert payload[name]["patients"] == sorted(_patients(members))
