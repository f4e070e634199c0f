"""The volume of outlined blood over a series: slice spacing, voxel counting and ABC/2."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from app.services.inference import SliceSegmentation
from app.services.segmentation.records import compact_numbers, model_of, pixel_spacing
from ml.data.segmentation import SUBTYPES
from ml.evaluation.segmentation import abc2_volume_ml, voxel_volume_ml

NO_PIXEL_SPACING = (
    "No volume: the slices do not give their pixel spacing (DICOM PixelSpacing), so pixels cannot be "
    "turned into millimetres."
)
NO_SLICE_SPACING = (
    "No volume: the distance between slices is unknown (no usable ImagePositionPatient on the slices "
    "and no SliceThickness)."
)


class PackedMasks(Sequence[np.ndarray]):
    """Boolean slice masks kept as packed bits, so that a long series stays small in memory."""

    def __init__(self) -> None:
        self._packed: list[tuple[np.ndarray, tuple[int, ...]]] = []

    def append(self, mask: np.ndarray) -> None:
        blood = np.asarray(mask, bool)
        self._packed.append((np.packbits(blood.ravel()), blood.shape))

    def __len__(self) -> int:
        return len(self._packed)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(index, slice):
            return [self[item] for item in range(len(self))[index]]
        packed, shape = self._packed[index]
        count = int(np.prod(shape))
        return np.unpackbits(packed, count=count).astype(bool).reshape(shape)

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]


def slice_spacing_mm(
    positions: Sequence[float | None], slice_thickness: Any
) -> tuple[float | None, str | None]:
    """Distance between slices and where it came from.

    The median gap between the slices' positions along the normal (``"positions"``) when every
    slice has one and there are at least two; else the DICOM SliceThickness
    (``"slice_thickness"``); else ``(None, None)``.
    """
    if len(positions) >= 2 and all(item is not None for item in positions):
        ordered = np.sort(np.asarray(positions, dtype=np.float64))
        gaps = np.diff(ordered)
        gaps = gaps[gaps > 1e-3]
        if gaps.size:
            return round(float(np.median(gaps)), 4), "positions"
    try:
        thickness = float(slice_thickness)
    except (TypeError, ValueError):
        return None, None
    if math.isfinite(thickness) and thickness > 0:
        return thickness, "slice_thickness"
    return None, None


class StudySegmentation:
    """Collects the outlines of a series slice by slice, then works out its volumes."""

    def __init__(self) -> None:
        self.model: dict[str, str] | None = None
        self.slices: list[dict[str, list[Any]]] = []
        self.blood = PackedMasks()
        self.grid_blood_px = 0

    def add(self, segmentation: SliceSegmentation) -> None:
        self.model = self.model or model_of(segmentation)
        self.slices.append(compact_numbers(segmentation))
        self.blood.append(segmentation.result.blood)
        self.grid_blood_px += segmentation.result.grid_blood_px

    def summary(
        self, positions: Sequence[float | None], spacing_value: Any, slice_thickness: Any
    ) -> dict[str, Any]:
        """The study's segmentation for its details: volumes (or why there are none) and each slice."""
        spacing = pixel_spacing(spacing_value)
        between, source = slice_spacing_mm(positions, slice_thickness)
        totals = [sum(int(entry["area_px"][k]) for entry in self.slices) for k in range(len(SUBTYPES))]
        reason = NO_PIXEL_SPACING if spacing is None else NO_SLICE_SPACING if between is None else None
        volume: float | None = None
        abc2: dict[str, float] | None = None
        voxel_ml: float | None = None
        if spacing is not None and between is not None:
            volume = round(voxel_volume_ml(self.blood, spacing, between), 3)
            abc2 = abc2_volume_ml(self.blood, spacing, between)
            voxel_ml = spacing[0] * spacing[1] * between / 1000.0
        return {
            "model": self.model or {},
            "pixel_spacing_mm": list(spacing) if spacing else None,
            "slice_spacing_mm": between,
            "slice_spacing_source": source,
            "volume_ml": volume,
            "volume_unavailable_reason": reason,
            "abc2": abc2,
            "blood_area_px": int(sum(totals)),
            "grid_blood_px": self.grid_blood_px,
            "subtypes": {
                name: {
                    "probability": max(
                        (float(entry["probabilities"][k]) for entry in self.slices), default=0.0
                    ),
                    "area_px": totals[k],
                    "volume_ml": round(totals[k] * voxel_ml, 3) if voxel_ml is not None else None,
                }
                for k, name in enumerate(SUBTYPES)
            },
            "slices": self.slices,
        }
