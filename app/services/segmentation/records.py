"""The numbers a slice's or a study's outlines leave behind: areas, records and pixel spacing.

A slice's numbers (subtype probabilities, outlined areas) are kept in the stored record's
details; a study keeps each slice's and works out its volumes (:mod:`.volumes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from app.services.details import StudySegmentationRecord
from app.services.inference import SliceSegmentation
from ml.data.segmentation import SUBTYPES

MASK_FILE = "mask.png"
CONTOURS_FILE = "contours.png"


def finite_float(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def pixel_spacing(value: Any) -> tuple[float, float] | None:
    """A usable (row, column) pixel spacing in millimetres from stored metadata, else None."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    try:
        rows, columns = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(item) and item > 0 for item in (rows, columns)):
        return None
    return rows, columns


def area_mm2(pixels: int, spacing: tuple[float, float] | None) -> float | None:
    """``pixels`` in square millimetres, rounded to 0.01, or None without a spacing."""
    return round(pixels * spacing[0] * spacing[1], 2) if spacing else None


def model_of(segmentation: SliceSegmentation) -> dict[str, str]:
    """The name and version of the model that drew the outlines."""
    return {"name": segmentation.model_name, "version": segmentation.model_version}


def _slice_numbers(
    probabilities: Sequence[float], areas: Sequence[int], spacing: tuple[float, float] | None
) -> dict[str, Any]:
    blood = int(sum(areas))
    return {
        "subtypes": {
            name: {
                "probability": float(probabilities[index]),
                "area_px": int(areas[index]),
                "area_mm2": area_mm2(int(areas[index]), spacing),
            }
            for index, name in enumerate(SUBTYPES)
        },
        "blood_area_px": blood,
        "blood_area_mm2": area_mm2(blood, spacing),
    }


def compact_numbers(segmentation: SliceSegmentation) -> dict[str, list[Any]]:
    """A slice's subtype probabilities and outlined pixels, in class order: what a study keeps of each."""
    result = segmentation.result
    areas = result.area_px()
    return {
        "probabilities": [float(result.subtype_probabilities[name]) for name in SUBTYPES],
        "area_px": [int(areas[name]) for name in SUBTYPES],
    }


def slice_record(segmentation: SliceSegmentation, spacing_value: Any) -> dict[str, Any]:
    """What a prediction keeps of its segmentation in the record's details."""
    spacing = pixel_spacing(spacing_value)
    compact = compact_numbers(segmentation)
    return {
        "model": model_of(segmentation),
        "pixel_spacing_mm": list(spacing) if spacing else None,
        **_slice_numbers(compact["probabilities"], compact["area_px"], spacing),
    }


def study_slice_record(study_segmentation: dict[str, Any], index: int) -> dict[str, Any] | None:
    """One study slice's segmentation, in the same shape as a prediction's, from the study's details."""
    slices = study_segmentation.get("slices")
    if not isinstance(slices, list) or not 0 <= index < len(slices):
        return None
    entry = slices[index]
    spacing = pixel_spacing(study_segmentation.get("pixel_spacing_mm"))
    return {
        "model": study_segmentation.get("model", {}),
        "pixel_spacing_mm": list(spacing) if spacing else None,
        **_slice_numbers(entry["probabilities"], entry["area_px"], spacing),
    }


def most_outlined_slices(stored: StudySegmentationRecord, count: int = 3) -> list[int]:
    """Indices of the slices with the largest outlined area (only slices with some), largest first."""
    areas = [sum(entry.area_px) for entry in stored.slices]
    order = sorted(range(len(areas)), key=lambda index: (-areas[index], index))
    return [index for index in order[:count] if areas[index] > 0]
