"""Data for the haemorrhage segmentation and subtype model.

Three kinds of slice feed it:

* ``bhsd_seg``: slices with pixel masks by subtype (class index per pixel), split by scan
  volume; they teach *where* and *which kind*.
* CT-ICH normal slices: their mask is known to be empty (the slice has no haemorrhage), so
  they teach the model to say "nothing here".
* CT-ICH haemorrhage slices: no mask, but per-slice subtype labels; they train the subtype
  head only (their mask loss is switched off).

CT-ICH slices keep the patient split of the classifier (its ``split_manifest.json``), so no
patient the classifier was tested on is trained on here either.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ml.data.datasets import load_image, load_raw_image, read_csv_rows
from ml.data.preprocessing import Geometry, PreprocessConfig, preprocess
from ml.errors import MissingDataFile

__all__ = [
    "SUBTYPES",
    "SUBTYPE_COLOURS",
    "SegSample",
    "load_seg_image",
    "mask_to_input",
    "preprocess_pair",
    "read_bhsd",
    "read_ct_ich_subtypes",
    "split_ct_ich_by_manifest",
    "volume_split",
]

# Class index k (1..5) in every mask is SUBTYPES[k - 1]; 0 is background.
SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
# RGB colours of the contours drawn for each subtype (distinct under common colour blindness).
SUBTYPE_COLOURS = {
    "epidural": (230, 159, 0),
    "intraparenchymal": (213, 94, 0),
    "intraventricular": (86, 180, 233),
    "subarachnoid": (0, 158, 115),
    "subdural": (204, 121, 167),
}
# bhsd_seg pixels are Hounsfield units clipped to 0..255; the brain window is 0..80 HU.
BRAIN_WINDOW_HU = (0.0, 80.0)


@dataclass(frozen=True)
class SegSample:
    """One slice for the segmentation model.

    ``mask_path`` is ``None`` where no pixel mask exists; ``mask_known`` says whether the
    model may learn from the (possibly empty) mask; ``subtypes`` holds 0/1 per subtype.
    """

    path: Path
    mask_path: Path | None
    subtypes: tuple[int, ...]
    group: str
    dataset: str
    mask_known: bool
    hounsfield_png: bool = False

    @property
    def any_blood(self) -> int:
        return int(any(self.subtypes))

    @property
    def sample_id(self) -> str:
        return f"{self.dataset}:{self.path.parent.name}/{self.path.name}"


def load_seg_image(sample: SegSample) -> np.ndarray:
    """The slice as an 8-bit brain-window image (HU PNGs are windowed to 0..80 HU)."""
    if not sample.hounsfield_png:
        return load_image(sample.path)
    # The stored values are Hounsfield units: read them as they are and window them here.
    stored = load_raw_image(sample.path)
    gray = stored if stored.ndim == 2 else cv2.cvtColor(stored, cv2.COLOR_BGR2GRAY)
    low, high = BRAIN_WINDOW_HU
    windowed = (gray.astype(np.float32) - low) / (high - low)
    return np.round(np.clip(windowed, 0.0, 1.0) * 255.0).astype(np.uint8)


def load_mask(sample: SegSample, shape: tuple[int, int]) -> np.ndarray:
    """Class-index mask (uint8, 0..5) of ``shape``; all background when the mask is empty."""
    if sample.mask_path is None:
        return np.zeros(shape, np.uint8)
    mask = load_raw_image(sample.mask_path)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != shape:
        raise ValueError(f"Mask {sample.mask_path} has shape {mask.shape}, its image {shape}.")
    if int(mask.max()) > len(SUBTYPES):
        raise ValueError(f"Mask {sample.mask_path} holds class {int(mask.max())}; 0..5 expected.")
    return mask.astype(np.uint8)


def read_bhsd(data_dir: Path) -> list[SegSample]:
    """``bhsd_seg``: 52 slices with masks; the group is the scan volume."""
    root = Path(data_dir) / "bhsd_seg"
    samples = []
    with (root / "labels.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            subtypes = tuple(int(int(row[f"{name}_px"]) > 0) for name in SUBTYPES)
            samples.append(
                SegSample(
                    path=root / row["image"],
                    mask_path=root / row["mask"],
                    subtypes=subtypes,
                    group=row["volume"],
                    dataset="bhsd_seg",
                    mask_known=True,
                    hounsfield_png=True,
                )
            )
    return samples


def read_ct_ich_subtypes(data_dir: Path) -> list[SegSample]:
    """CT-ICH brain-window slices with per-slice subtype labels; normal slices have a known
    empty mask, haemorrhage slices no mask.

    Raises:
        MissingDataFile: there is no ``ct_ich/labels.csv``.
    """
    root = Path(data_dir) / "ct_ich"
    samples = []
    for row in read_csv_rows(root / "labels.csv"):
        relative = row["brain_path"].strip()
        if not relative:
            continue
        subtypes = tuple(int(row[name].strip() or 0) for name in SUBTYPES)
        samples.append(
            SegSample(
                path=root / relative,
                mask_path=None,
                subtypes=subtypes,
                group=f"ct_ich-{row['patient_id'].strip()}",
                dataset="ct_ich",
                mask_known=not any(subtypes),
            )
        )
    return samples


def volume_split(
    samples: Sequence[SegSample],
    validation_volumes: int,
    test_volumes: int,
    seed: int,
    max_tries: int = 1000,
) -> dict[str, list[SegSample]]:
    """Split by volume (group); seeded, and redrawn until every subtype present in the data
    appears in the test part (and, where possible, the validation part)."""
    groups = sorted({sample.group for sample in samples})
    if validation_volumes + test_volumes >= len(groups):
        raise ValueError(f"Only {len(groups)} volumes: cannot hold out {validation_volumes + test_volumes}.")
    present = np.array([any(s.subtypes[k] for s in samples) for k in range(len(SUBTYPES))])

    def covered(members: list[SegSample]) -> bool:
        seen = np.array([any(s.subtypes[k] for s in members) for k in range(len(SUBTYPES))])
        return bool(np.all(seen >= present))

    rng = np.random.default_rng(seed)
    best: dict[str, list[SegSample]] | None = None
    for _ in range(max_tries):
        order = list(rng.permutation(groups))
        test_groups = set(order[:test_volumes])
        validation_groups = set(order[test_volumes : test_volumes + validation_volumes])
        parts = {
            "train": [s for s in samples if s.group not in test_groups | validation_groups],
            "validation": [s for s in samples if s.group in validation_groups],
            "test": [s for s in samples if s.group in test_groups],
        }
        if covered(parts["test"]) and covered(parts["train"]):
            if best is None:
                best = parts
            if covered(parts["validation"]):
                return parts
    if best is None:
        raise ValueError("No split puts every subtype into both the training and the test volumes.")
    return best


def split_ct_ich_by_manifest(samples: Sequence[SegSample], manifest_path: Path) -> dict[str, list[SegSample]]:
    """CT-ICH slices divided by the patient split of a classifier's ``split_manifest.json``."""
    if not Path(manifest_path).is_file():
        raise MissingDataFile(f"No split manifest at {manifest_path}: is it a classifier bundle?")
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    parts: dict[str, list[SegSample]] = {}
    for part in ("train", "validation", "test"):
        patients = set(manifest[part]["patients"])
        parts[part] = [s for s in samples if s.group in patients]
    return parts


def mask_to_input(mask: np.ndarray, geometry: Geometry, size: int) -> np.ndarray:
    """Carry a class-index mask through the geometry of :func:`preprocess` (crop, pad,
    resize) onto the ``size`` x ``size`` model grid; nearest neighbour keeps class indices."""
    top, bottom, left, right = geometry.crop_box
    crop = mask[top:bottom, left:right]
    square = np.zeros((geometry.square_side, geometry.square_side), np.uint8)
    pad_top, pad_left = geometry.pad
    square[pad_top : pad_top + crop.shape[0], pad_left : pad_left + crop.shape[1]] = crop
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_NEAREST)


def preprocess_pair(sample: SegSample, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Model input (uint8, S x S) and its class-index mask (uint8, S x S) for one sample."""
    image = load_seg_image(sample)
    result = preprocess(image, config)
    mask = load_mask(sample, result.geometry.original_shape)
    input_mask = mask_to_input(mask, result.geometry, config.image_size)
    pixels = np.round(result.image[:, :, 0] * 255.0).astype(np.uint8)
    return pixels, input_mask, result.geometry
