"""Outlines of haemorrhage by subtype as the service stores and shows them.

A slice's segmentation is kept in two places: the class map as ``mask.png`` (class indices
0..5, one channel, at the uploaded image's size) with its coloured outlines as ``contours.png``
(RGBA, transparent except for the outlines), and its numbers (subtype probabilities, areas) in
the stored record's details. A study adds volumes: voxel counting over the slices, and the
bedside ABC/2 estimate beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, overload

import cv2
import numpy as np

from app.services.inference import SliceSegmentation, encode_png, with_png_text
from ml.data.segmentation import SUBTYPE_COLOURS, SUBTYPES
from ml.evaluation.segmentation import POINTING_GAME_TARGET, abc2_volume_ml, voxel_volume_ml
from ml.segmenter import MULTITASK_KIND, contour_overlay

MASK_FILE = "mask.png"
CONTOURS_FILE = "contours.png"
SUBTYPE_TITLES = {
    "epidural": "Epidural",
    "intraparenchymal": "Intraparenchymal",
    "intraventricular": "Intraventricular",
    "subarachnoid": "Subarachnoid",
    "subdural": "Subdural",
}
# Below this share of test slices where the heat map's peak lies in the bleed, users are told
# that the heat map often does not point at the bleed.
POINTING_GAME_POOR = POINTING_GAME_TARGET
NO_PIXEL_SPACING = (
    "No volume: the slices do not give their pixel spacing (DICOM PixelSpacing), so pixels cannot be "
    "turned into millimetres."
)
NO_SLICE_SPACING = (
    "No volume: the distance between slices is unknown (no usable ImagePositionPatient on the slices "
    "and no SliceThickness)."
)


def colour_hex(name: str) -> str:
    red, green, blue = SUBTYPE_COLOURS[name]
    return f"#{red:02x}{green:02x}{blue:02x}"


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
    return round(pixels * spacing[0] * spacing[1], 2) if spacing else None


def _provenance(segmentation: SliceSegmentation) -> dict[str, str]:
    return {
        "Software": f"ICH Detect, segmentation model {segmentation.model_name} {segmentation.model_version}",
        "Disclaimer": "AI generated. Not for clinical use.",
    }


def mask_png(segmentation: SliceSegmentation) -> bytes:
    """The class of each pixel as a PNG at the uploaded image's size, naming the model that drew it
    and saying that it is not for clinical use (PNG text)."""
    classes = ", ".join(f"{index} {name}" for index, name in enumerate(SUBTYPES, start=1))
    return with_png_text(
        encode_png(segmentation.result.class_map),
        {"Description": f"Class of each pixel: 0 none, {classes}.", **_provenance(segmentation)},
    )


def contours_png(segmentation: SliceSegmentation) -> bytes:
    """The outlines, one colour per subtype, as a transparent PNG at the uploaded image's size, with
    the same provenance text as :func:`mask_png`."""
    return with_png_text(
        encode_png(contour_overlay(segmentation.result.class_map)),
        {
            "Description": "Outlines of possible haemorrhage, one colour per subtype.",
            **_provenance(segmentation),
        },
    )


def _model(segmentation: SliceSegmentation) -> dict[str, str]:
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


def _compact(segmentation: SliceSegmentation) -> dict[str, list[Any]]:
    result = segmentation.result
    areas = result.area_px()
    return {
        "probabilities": [float(result.subtype_probabilities[name]) for name in SUBTYPES],
        "area_px": [int(areas[name]) for name in SUBTYPES],
    }


def slice_record(segmentation: SliceSegmentation, spacing_value: Any) -> dict[str, Any]:
    """What a prediction keeps of its segmentation in the record's details."""
    spacing = pixel_spacing(spacing_value)
    compact = _compact(segmentation)
    return {
        "model": _model(segmentation),
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

    def add(self, segmentation: SliceSegmentation) -> None:
        self.model = self.model or _model(segmentation)
        self.slices.append(_compact(segmentation))
        self.blood.append(segmentation.result.blood)

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


def composite_png(image_png: bytes, contours_png: bytes) -> bytes:
    """The outlines drawn over the slice, as one RGB PNG (for the PDF report)."""
    image = cv2.imdecode(np.frombuffer(image_png, np.uint8), cv2.IMREAD_COLOR)
    contours = cv2.imdecode(np.frombuffer(contours_png, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or contours is None or contours.ndim != 3 or contours.shape[2] != 4:
        raise ValueError("The stored slice or outline image is not readable.")
    if contours.shape[:2] != image.shape[:2]:
        contours = cv2.resize(contours, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    alpha = contours[:, :, 3:4].astype(np.float32) / 255.0
    blended = image.astype(np.float32) * (1.0 - alpha) + contours[:, :, :3].astype(np.float32) * alpha
    ok, buffer = cv2.imencode(".png", np.round(blended).astype(np.uint8))
    if not ok:
        raise RuntimeError("PNG encoding failed.")
    return buffer.tobytes()


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _fraction(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def labelled_slices(card: dict[str, Any]) -> tuple[int | None, int | None]:
    """``(slices with hand-drawn outlines, those kept for testing)`` from a segmentation card."""
    counts = _mapping(_mapping(card.get("training")).get("counts"))
    labelled = [
        _mapping(value).get("slices") for key, value in counts.items() if str(key).startswith("bhsd_")
    ]
    numbers = [int(item) for item in labelled if isinstance(item, int)]
    test = _mapping(counts.get("bhsd_test")).get("slices")
    return (sum(numbers) if numbers else None), (int(test) if isinstance(test, int) else None)


def any_blood_dice(card: dict[str, Any]) -> tuple[float | None, list[float] | None]:
    """The test Dice of the outlines (any blood), with its 95% interval when the card has one."""
    dice = _mapping(
        _mapping(
            _mapping(_mapping(_mapping(card.get("metrics")).get("test")).get("segmentation")).get("any_blood")
        ).get("dice")
    )
    interval = dice.get("ci95")
    bounds = None
    if isinstance(interval, list) and len(interval) == 2:
        low, high = _fraction(interval[0]), _fraction(interval[1])
        bounds = [low, high] if low is not None and high is not None else None
    return _fraction(dice.get("value")), bounds


def pointing_game(card: dict[str, Any]) -> tuple[float | None, int | None]:
    """How often the Grad-CAM peak fell inside the bleed on test slices, and on how many slices."""
    games = _mapping(card.get("pointing_game"))
    for key in ("test_volumes", "all_bhsd_seg_slices"):
        entry = _mapping(games.get(key))
        rate = _fraction(entry.get("hit_rate"))
        if rate is not None:
            slices = entry.get("slices")
            return rate, int(slices) if isinstance(slices, int) else None
    return None, None


def help_sentences(card: dict[str, Any]) -> list[str]:
    """What a user must know about the outlines and the heat map, in plain words, from the card."""
    name, version = card.get("name", "the segmentation model"), card.get("version", "")
    labelled, test = labelled_slices(card)
    if labelled is not None:
        held = f", {test} of them kept apart for testing" if test else ""
        trained = f"trained on only {labelled} labelled slices (slices with hand-drawn outlines{held})"
    else:
        trained = "trained on only a small number of slices with hand-drawn outlines"
    # A multitask model draws the outlines with its own mask head, beside its probability.
    source = (
        "the mask head of the classifier" if card.get("kind") == MULTITASK_KIND else "a segmentation model"
    )
    sentences = [f"The coloured outlines come from {source} ({name} {version}".rstrip() + f") {trained}."]
    dice, interval = any_blood_dice(card)
    if dice is not None:
        ci = f" (95% CI {interval[0]:.2f} to {interval[1]:.2f})" if interval else ""
        sentences.append(
            f"On held-out scans its outlines matched the hand-drawn ones with a Dice of {dice:.2f}{ci}, "
            "where 1 is a perfect match and 0 no overlap: outlines can miss blood and can mark blood "
            "that is not there."
        )
    else:
        sentences.append(
            "Its outlines have not been measured against hand-drawn ones; treat them with caution."
        )
    rate, slices = pointing_game(card)
    if rate is not None:
        on = (
            f" of {slices} test slices with a labelled bleed"
            if slices
            else " of test slices with a labelled bleed"
        )
        if rate < POINTING_GAME_POOR:
            sentences.append(
                f"The Grad-CAM heat map's hottest point lay inside the bleed on only {rate:.0%}{on} "
                "(pointing game), so the heat map often does not point at the bleed: it shows what "
                "raised the probability, not where the blood is."
            )
        else:
            sentences.append(
                f"The Grad-CAM heat map's hottest point lay inside the bleed on {rate:.0%}{on} (pointing game)."
            )
    sentences.append("Areas and volumes are measured on the outlines and are only as good as they are.")
    return sentences


def area_text(area_px: int, area: float | None) -> str:
    if area is not None:
        return f"{area:,.1f} mm² ({area_px:,} px)"
    return f"{area_px:,} px"


def legend(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per subtype for the result page and the report: colour, name, probability, area."""
    subtypes = _mapping(record.get("subtypes"))
    rows = []
    for name in SUBTYPES:
        entry = _mapping(subtypes.get(name))
        area_px = int(entry.get("area_px") or 0)
        probability = _fraction(entry.get("probability")) or 0.0
        rows.append(
            {
                "name": name,
                "title": SUBTYPE_TITLES[name],
                "colour": colour_hex(name),
                "rgb": SUBTYPE_COLOURS[name],
                "probability": probability,
                "area_px": area_px,
                "area_mm2": _fraction(entry.get("area_mm2")),
                "area": area_text(area_px, _fraction(entry.get("area_mm2"))),
                "volume_ml": _fraction(entry.get("volume_ml")),
                "present": area_px > 0,
            }
        )
    return rows


FALLBACK_NOTE = (
    "The outlines come from a segmentation model trained on few labelled slices; check every outline "
    "against the images."
)


def _report_lines(rows: list[dict[str, Any]], volumes: bool) -> list[Any]:
    from app.services.reporting import SubtypeLine

    lines = []
    for row in rows:
        if volumes:
            amount = (
                f"{row['volume_ml']:.2f} mL"
                if row["volume_ml"] is not None
                else f"{row['area_px']:,} px in all"
            )
        else:
            amount = row["area"]
        lines.append(
            SubtypeLine(title=row["title"], colour=row["rgb"], probability=row["probability"], amount=amount)
        )
    return lines


def _report_model(record: dict[str, Any]) -> Any:
    from app.services.reporting import ReportModelInfo

    model = _mapping(record.get("model"))
    return ReportModelInfo(
        name=str(model.get("name", "unknown")), version=str(model.get("version", "")), metrics={}
    )


def slice_report_section(
    record: dict[str, Any], card: dict[str, Any], image_png: bytes, contours_png: bytes
) -> Any:
    """The report's outlines section for one slice: areas by subtype and the outlines over the slice."""
    from app.services.reporting import SegmentationSection

    blood_px = int(record.get("blood_area_px") or 0)
    blood = area_text(blood_px, _fraction(record.get("blood_area_mm2")))
    summary = [
        f"Outlined blood on this slice: {blood}." if blood_px else "No blood was outlined on this slice."
    ]
    if record.get("blood_area_mm2") is None:
        summary.append("Areas are in pixels: the image does not give its pixel spacing.")
    return SegmentationSection(
        model=_report_model(record),
        amount_title="Outlined area",
        subtypes=_report_lines(legend(record), volumes=False),
        summary=summary,
        images=[(composite_png(image_png, contours_png), "Outlines over the slice, coloured by subtype")],
        notes=help_sentences(card) if card else [FALLBACK_NOTE],
    )


SPACING_SOURCES = {"positions": "the slice positions", "slice_thickness": "the DICOM SliceThickness"}


def study_summary_sentences(stored: dict[str, Any]) -> list[str]:
    """The study's volumes in words: voxel count and ABC/2, or why there is no volume."""
    volume = _fraction(stored.get("volume_ml"))
    if volume is None:
        return [str(stored.get("volume_unavailable_reason") or "No volume could be worked out.")]
    if not stored.get("blood_area_px"):
        return ["No blood was outlined on any slice."]
    spacing = stored.get("pixel_spacing_mm") or [0.0, 0.0]
    between = _fraction(stored.get("slice_spacing_mm")) or 0.0
    source = SPACING_SOURCES.get(str(stored.get("slice_spacing_source")), "the DICOM attributes")
    sentences = [
        f"Outlined blood volume {volume:.1f} mL by voxel counting: {int(stored['blood_area_px']):,} pixels of "
        f"{float(spacing[0]):.2f} x {float(spacing[1]):.2f} mm, {between:.2f} mm apart (from {source})."
    ]
    abc2 = _mapping(stored.get("abc2"))
    if abc2:
        sentences.append(
            f"Bedside ABC/2 estimate from the same outlines: {float(abc2['volume_ml']):.1f} mL "
            f"(A {float(abc2['a_mm']):.1f} mm, B {float(abc2['b_mm']):.1f} mm, C {float(abc2['c_mm']):.1f} mm)."
        )
    return sentences


def study_report_section(
    stored: dict[str, Any], card: dict[str, Any], images: list[tuple[bytes, str]]
) -> Any:
    """The report's outlines section for a study: volumes by subtype and the most outlined slices."""
    from app.services.reporting import SegmentationSection

    return SegmentationSection(
        model=_report_model(stored),
        amount_title="Volume (voxel count)",
        subtypes=_report_lines(legend(stored), volumes=True),
        summary=study_summary_sentences(stored),
        images=images,
        notes=help_sentences(card) if card else [FALLBACK_NOTE],
    )


def most_outlined_slices(stored: dict[str, Any], count: int = 3) -> list[int]:
    """Indices of the slices with the largest outlined area (only slices with some), largest first."""
    slices = stored.get("slices")
    if not isinstance(slices, list):
        return []
    areas = [sum(int(value) for value in _mapping(entry).get("area_px", [])) for entry in slices]
    order = sorted(range(len(areas)), key=lambda index: (-areas[index], index))
    return [index for index in order[:count] if areas[index] > 0]
