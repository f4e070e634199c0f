"""The slices the three-headed network learns from: every collection read, split by patient,
preprocessed onto the model grid with its labels (``Part``), and cached.

``prepare_parts`` is what training, the bundle and the validation tools read; ``READERS`` lists
one reader per collection (see ``ml.multitask`` for what each collection brings).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.data import phe_sich
from ml.data.datasets import load_image, read_head_ct
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.data.segmentation import (
    SUBTYPES,
    load_mask,
    load_seg_image,
    mask_to_input,
    read_bhsd,
    read_ct_ich_subtypes,
    volume_split,
)
from ml.data.splits import patient_split

if TYPE_CHECKING:
    from ml.multitask import MultitaskConfig

logger = logging.getLogger(__name__)

NUM_SUBTYPES = len(SUBTYPES)
INTRAPARENCHYMAL = SUBTYPES.index("intraparenchymal")
# Per-pixel flags stored beside each mask: the pixel's class may be learnt from (valid), and the
# pixel lies in a region that holds some blood somewhere (box).
FLAG_VALID = 1
FLAG_BOX = 2
# Changes with what preparation makes of a slice (orientation, pixel labels), so that a cache of
# another preparation is never read.
PREPARATION = "3: phe_sich face up with derived blood; no-head slices ignored; slices read by decode_image"


@dataclass
class Part:
    """Preprocessed slices of one collection and split, on the model grid.

    ``images``, ``masks`` (class index) and ``flags`` (``FLAG_VALID | FLAG_BOX`` per pixel) are
    uint8 ``N x S x S``; ``labels``/``label_weights`` are per slice, ``subtypes`` and
    ``subtype_weights`` ``N x 5``.
    """

    dataset: str
    ids: list[str]
    groups: list[str]
    images: np.ndarray
    masks: np.ndarray
    flags: np.ndarray
    labels: np.ndarray
    label_weights: np.ndarray
    subtypes: np.ndarray
    subtype_weights: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray | Sequence[bool]) -> Part:
        chosen = np.flatnonzero(np.asarray(keep, bool))
        return Part(
            self.dataset,
            [self.ids[i] for i in chosen],
            [self.groups[i] for i in chosen],
            *(getattr(self, name)[chosen] for name in ARRAYS),
        )


ARRAYS = ("images", "masks", "flags", "labels", "label_weights", "subtypes", "subtype_weights")


@dataclass(frozen=True)
class _Slice:
    """What preparation needs of one slice, whatever its collection."""

    sample_id: str
    group: str
    load: Callable[[], np.ndarray]
    label: int
    label_weight: float
    subtypes: tuple[int, ...]
    subtype_weights: tuple[float, ...]
    # Pixels: "none" (no pixel label), "empty" (no blood anywhere), "mask" (load_mask gives the
    # class map), "somewhere" (some blood in the head), "box" (blood inside, none outside).
    pixels: str
    load_mask: Callable[[tuple[int, int]], np.ndarray] | None = None
    box: tuple[int, int, int, int] | None = None


def _prepare(dataset: str, slices: Sequence[_Slice], config: PreprocessConfig) -> Part:
    size = config.image_size
    count = len(slices)
    images = np.zeros((count, size, size), np.uint8)
    masks = np.zeros((count, size, size), np.uint8)
    flags = np.zeros((count, size, size), np.uint8)
    ignored = np.zeros(count, bool)
    for index, item in enumerate(slices):
        result = preprocess(item.load(), config)
        images[index] = np.round(result.image[:, :, 0] * 255.0).astype(np.uint8)
        geometry = result.geometry
        if result.head_mask is None:
            # No head found (the ends of a scan): the whole image, table and all, would be the
            # input. Such a slice teaches nothing.
            ignored[index] = True
        elif item.pixels == "empty":
            flags[index] = FLAG_VALID
        elif item.pixels == "mask" and item.load_mask is not None:
            masks[index] = mask_to_input(item.load_mask(geometry.original_shape), geometry, size)
            flags[index] = FLAG_VALID
        elif item.pixels == "somewhere":
            flags[index] = FLAG_BOX
        elif item.pixels == "box" and item.box is not None:
            xmin, ymin, xmax, ymax = item.box
            region = np.zeros(geometry.original_shape, np.uint8)
            region[max(0, ymin) : ymax + 1, max(0, xmin) : xmax + 1] = 1
            inside = mask_to_input(region, geometry, size).astype(bool)
            known = np.where(inside, 0, FLAG_VALID).astype(np.uint8)
            if item.load_mask is not None:
                blood = mask_to_input(item.load_mask(geometry.original_shape), geometry, size)
                masks[index] = np.where(inside, blood, 0)
                known = np.full_like(known, FLAG_VALID)
            flags[index] = known | np.where(inside, FLAG_BOX, 0).astype(np.uint8)
    return Part(
        dataset=dataset,
        ids=[item.sample_id for item in slices],
        groups=[item.group for item in slices],
        images=images,
        masks=masks,
        flags=flags,
        labels=np.array([item.label for item in slices], np.float32),
        label_weights=np.where(ignored, 0.0, [item.label_weight for item in slices]).astype(np.float32),
        subtypes=np.array([item.subtypes for item in slices], np.float32).reshape(count, NUM_SUBTYPES),
        subtype_weights=np.where(
            ignored[:, None],
            0.0,
            np.array([item.subtype_weights for item in slices]).reshape(count, NUM_SUBTYPES),
        ).astype(np.float32),
    )


def _ct_ich_slices(data_dir: Path) -> list[_Slice]:
    slices = []
    for sample in read_ct_ich_subtypes(data_dir):
        positive = int(any(sample.subtypes))
        slices.append(
            _Slice(
                sample_id=sample.sample_id,
                group=sample.group,
                load=lambda s=sample: load_seg_image(s),  # type: ignore[misc]
                label=positive,
                label_weight=1.0,
                subtypes=sample.subtypes,
                subtype_weights=(1.0,) * NUM_SUBTYPES,
                pixels="somewhere" if positive else "empty",
            )
        )
    return slices


def _head_ct_slices(data_dir: Path) -> list[_Slice]:
    return [
        _Slice(
            sample_id=sample.sample_id,
            group=sample.group,
            load=lambda s=sample: load_image(s.path),  # type: ignore[misc]
            label=sample.label,
            label_weight=1.0,
            subtypes=(0,) * NUM_SUBTYPES,
            # The subtypes of a haemorrhage figure are not given.
            subtype_weights=(0.0 if sample.label else 1.0,) * NUM_SUBTYPES,
            pixels="somewhere" if sample.label else "empty",
        )
        for sample in read_head_ct(data_dir)
    ]


def _bhsd_slices(data_dir: Path) -> list[_Slice]:
    return [
        _Slice(
            sample_id=sample.sample_id,
            group=f"bhsd_seg-{sample.group}",
            load=lambda s=sample: load_seg_image(s),  # type: ignore[misc]
            label=1,
            label_weight=0.0,
            subtypes=sample.subtypes,
            subtype_weights=(1.0,) * NUM_SUBTYPES,
            pixels="mask",
            load_mask=lambda shape, s=sample: load_mask(s, shape),  # type: ignore[misc]
        )
        for sample in read_bhsd(data_dir)
    ]


def _phe_sich_slices(data_dir: Path, derived_blood: bool = True) -> list[_Slice]:
    """phe_sich slices face up; boxed slices learn "blood inside, none outside", and with
    ``derived_blood`` the derived blood mask inside the box (``ml.data.phe_sich.class_mask``)."""
    slices = []
    for item in phe_sich.read_phe_sich(data_dir):
        load = partial(phe_sich.load_phe_image, item)
        none = (0,) * NUM_SUBTYPES
        if item.near:
            slices.append(
                _Slice(item.sample_id, item.group, load, 0, 0.0, none, (0.0,) * NUM_SUBTYPES, "none")
            )
        elif not item.label:
            slices.append(
                _Slice(item.sample_id, item.group, load, 0, 1.0, none, (1.0,) * NUM_SUBTYPES, "empty")
            )
        else:
            subtypes = tuple(int(k == INTRAPARENCHYMAL) for k in range(NUM_SUBTYPES))
            weights = tuple(float(k == INTRAPARENCHYMAL) for k in range(NUM_SUBTYPES))
            box = None
            if item.box is not None:
                height, width = phe_sich.ORIGINAL_SHAPE
                box = phe_sich.rotate_box(item.box, (height, width), item.rotation)
            blood = (lambda shape, i=item: phe_sich.class_mask(i)) if derived_blood and box else None
            slices.append(
                _Slice(
                    item.sample_id,
                    item.group,
                    load,
                    1,
                    1.0,
                    subtypes,
                    weights,
                    "box" if box else "somewhere",
                    load_mask=blood,  # type: ignore[arg-type]
                    box=box,
                )
            )
    return slices


# What each collection brings: its slices with every label it has.
READERS: dict[str, Callable[[Path], list[_Slice]]] = {
    "ct_ich": _ct_ich_slices,
    "head_ct": _head_ct_slices,
    "phe_sich": _phe_sich_slices,
    "bhsd_seg": _bhsd_slices,
}


def _cache_path(
    cache_dir: Path | None, name: str, ids: Sequence[str], config: PreprocessConfig
) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(f"{PREPARATION}\n".encode())
    digest.update("\n".join(ids).encode())
    return Path(cache_dir) / f"multitask-{name}-{digest.hexdigest()[:16]}.npz"


def prepare_parts(
    data_dir: Path, config: MultitaskConfig, cache_dir: Path | None = None
) -> dict[str, dict[str, Part]]:
    """Every collection, split by patient (bhsd_seg by volume), preprocessed: ``{split: {dataset: Part}}``."""
    manifest = json.loads(Path(config.split_manifest).read_text(encoding="utf-8"))
    parts: dict[str, dict[str, Part]] = {"train": {}, "validation": {}, "test": {}}
    for name in config.collections:
        slices = READERS[name](Path(data_dir))
        if name in ("ct_ich", "head_ct"):
            assignment = {patient: split for split in parts for patient in manifest[split]["patients"]}
        elif name == "phe_sich":
            from ml.data.datasets import Sample

            stand_ins = [Sample(Path(s.sample_id), 1, s.group, name) for s in slices]
            split = patient_split(stand_ins, config.validation_fraction, config.test_fraction, config.seed)
            assignment = {s.group: part for part, members in split.parts().items() for s in members}
        else:
            from ml.data.segmentation import SegSample

            stand_ins_seg = [
                SegSample(Path(s.sample_id), None, s.subtypes, s.group, name, True) for s in slices
            ]
            volumes = volume_split(
                stand_ins_seg, config.bhsd_validation_volumes, config.bhsd_test_volumes, config.seed
            )
            assignment = {s.group: part for part, members in volumes.items() for s in members}
        for split_name in parts:
            chosen = [s for s in slices if assignment.get(s.group) == split_name]
            cache_path = _cache_path(cache_dir, name, [s.sample_id for s in chosen], config.preprocess_config)
            if cache_path is not None and cache_path.is_file():
                cached = np.load(cache_path)
                part = Part(
                    name,
                    [s.sample_id for s in chosen],
                    [s.group for s in chosen],
                    *(cached[a] for a in ARRAYS),
                )
            else:
                part = _prepare(name, chosen, config.preprocess_config)
                if cache_path is not None:
                    cache_path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(cache_path, **{a: getattr(part, a) for a in ARRAYS})
            parts[split_name][name] = part
            logger.info("%s %s: %d slices", name, split_name, len(part))
    return parts
