"""Patient-level, stratified, seeded splits and their manifests."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.data.datasets import Sample

__all__ = ["Split", "load_manifest", "patient_split", "write_manifest"]

SPLIT_NAMES = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]

    def parts(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


def patient_split(
    samples: Sequence[Sample],
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> Split:
    """Split by patient (``Sample.group``), stratified by dataset and patient label.

    A patient is positive when any of its slices is. Within each (dataset, patient label)
    stratum the patients are shuffled with ``seed`` and dealt out so that every stratum
    contributes the requested fractions to validation and test (at least one patient each
    when the stratum has three or more).
    """
    if not 0 < validation_fraction < 1 or not 0 < test_fraction < 1:
        raise ValueError("validation_fraction and test_fraction must lie strictly between 0 and 1.")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must be below 1.")
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_group[sample.group].append(sample)
    strata: dict[tuple[str, int], list[str]] = defaultdict(list)
    for group, members in sorted(by_group.items()):
        label = int(any(member.label for member in members))
        strata[(members[0].dataset, label)].append(group)

    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for key in sorted(strata):
        groups = list(strata[key])
        rng.shuffle(groups)
        count = len(groups)
        n_test = int(round(count * test_fraction))
        n_validation = int(round(count * validation_fraction))
        if count >= 3:
            n_test, n_validation = max(1, n_test), max(1, n_validation)
        for index, group in enumerate(groups):
            if index < n_test:
                assignment[group] = "test"
            elif index < n_test + n_validation:
                assignment[group] = "validation"
            else:
                assignment[group] = "train"

    parts: dict[str, list[Sample]] = {name: [] for name in SPLIT_NAMES}
    for sample in samples:
        parts[assignment[sample.group]].append(sample)
    return Split(**parts)


def write_manifest(split: Split, path: Path, seed: int) -> None:
    """Write the split as ids only (dataset, patient, image path relative to its dataset)."""
    payload: dict[str, object] = {"seed": seed}
    for name, members in split.parts().items():
        payload[name] = {
            "patients": sorted({sample.group for sample in members}),
            "images": sorted(sample.sample_id for sample in members),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def load_manifest(path: Path) -> dict[str, set[str]]:
    """Patients of each split, as written by :func:`write_manifest`."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return {name: set(payload[name]["patients"]) for name in SPLIT_NAMES}


def select(samples: Sequence[Sample], patients: set[str]) -> list[Sample]:
    """The samples whose patient is in ``patients``."""
    return [sample for sample in samples if sample.group in patients]
