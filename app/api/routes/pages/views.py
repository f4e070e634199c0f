"""What the result, study and worklist pages show, worked out from the stored records so the templates stay simple."""

from __future__ import annotations

from typing import Any

from app.api.routes.pages.filters import format_percent
from app.api.routes.pages.rendering import LABEL_TEXT
from app.core.labels import Label
from app.db import Prediction, Study
from app.services.details import (
    OutlineModel,
    PredictionDetails,
    SliceSegmentationRecord,
    StudySegmentationRecord,
)
from app.services.predictions import prediction_scope
from app.services.registry import ModelRegistry
from app.services.segmentation import (
    FALLBACK_NOTE,
    area_text,
    help_sentences,
    legend,
    study_summary_sentences,
)
from app.services.study_record import StudyRecord, slice_file
from ml.model_card import ModelCard

TIMING_TITLES = {
    "decode": "Reading the file",
    "preprocess": "Preprocessing",
    "model_and_gradcam": "Model and Grad-CAM",
    "segmentation": "Outlines (segmentation)",
    "postprocess": "Heat map overlay",
    "scope_check": "Scope check",
    "encode": "Encoding images",
    "scope_check_and_encode": "Scope check and images, side by side",
    "storage": "Saving",
    "total": "Total",
}


def patient_facts(record: Prediction | Study) -> list[tuple[str, str]]:
    """The patient and study fields entered with an analysis, those that were given."""
    facts = [
        ("Patient name", record.patient_name),
        ("Patient ID", record.patient_id),
        ("Study", record.study_description),
        ("Study date", record.study_date),
        ("Requesting clinician", record.requesting_clinician),
    ]
    return [(title, value) for title, value in facts if value]


def result_view(prediction: Prediction, details: PredictionDetails) -> dict[str, Any]:
    """What the result page shows, worked out here so the template stays simple; ``details`` are the
    prediction's details, read once by the caller."""
    positive = prediction.label == Label.HEMORRHAGE
    in_scope, scope_reasons = prediction_scope(prediction, details)
    timings = prediction.timings_ms or {}
    return {
        "positive": positive,
        "in_scope": in_scope,
        "scope_reasons": scope_reasons,
        "label_text": LABEL_TEXT.get(prediction.label, prediction.label),
        "probability_percent": prediction.probability * 100.0,
        "threshold_percent": prediction.threshold * 100.0,
        "study": patient_facts(prediction),
        "timings": [
            (TIMING_TITLES.get(stage, stage.replace("_", " ").capitalize()), float(value))
            for stage, value in timings.items()
            if isinstance(value, int | float)
        ],
        "base": f"/predictions/{prediction.id}",
    }


def outline_card(registry: ModelRegistry, model: OutlineModel | None) -> ModelCard | None:
    """The card of the model that drew stored outlines; None when none is named or it is no longer loaded."""
    return registry.find_card(model.name, model.version) if model is not None else None


def outline_help(card: ModelCard | None) -> list[str]:
    """How far to trust the outlines, from the card of the model that drew them (a note when
    that model is no longer loaded)."""
    return help_sentences(card.raw) if card is not None else [FALLBACK_NOTE]


def segmentation_view(
    record: SliceSegmentationRecord | None, card: ModelCard | None, contours: str
) -> dict[str, Any] | None:
    """The outlines of one slice for the result page: legend rows, totals and the help text."""
    if record is None:
        return None
    blood_px = record.blood_area_px
    return {
        "model": record.model,
        "rows": legend(record),
        "contours": contours,
        "blood": area_text(blood_px, record.blood_area_mm2) if blood_px else None,
        "millimetres": record.blood_area_mm2 is not None,
        "help": outline_help(card),
    }


def study_segmentation_view(
    stored: StudySegmentationRecord | None, card: ModelCard | None
) -> dict[str, Any] | None:
    """The study's volumes for the study page: voxel count, ABC/2, each subtype, or why there are none."""
    if stored is None:
        return None
    return {
        "model": stored.model,
        "rows": legend(stored),
        "volume_ml": stored.volume_ml,
        "reason": stored.volume_unavailable_reason,
        "abc2": stored.abc2,
        "summary": study_summary_sentences(stored),
        "help": outline_help(card),
    }


CHART_WIDTH = 600.0
CHART_HEIGHT = 160.0


def study_view(record: StudyRecord) -> dict[str, Any]:
    """What the study page shows: the decision, the slices for the scroller and the chart's geometry."""
    study = record.study
    segmented = record.details.segmentation is not None
    positive = study.label == Label.HEMORRHAGE
    key_slices = record.key_slices
    count = max(1, len(record.slices))

    def x(index: int) -> float:
        return CHART_WIDTH / 2 if count == 1 else index / (count - 1) * CHART_WIDTH

    def y(probability: float) -> float:
        return (1.0 - probability) * CHART_HEIGHT

    base = f"/studies/{study.id}"
    slices = [
        {
            "index": item.slice_index,
            "number": item.slice_index + 1,
            "probability": item.probability,
            "percent": format_percent(item.probability),
            "position": f"{item.position_mm:.1f} mm" if item.position_mm is not None else "",
            "key": item.slice_index in key_slices,
            "overlay": f"{base}/{slice_file('overlay', item.slice_index)}",
            "image": f"{base}/{slice_file('slice', item.slice_index)}",
            "contours": f"{base}/{slice_file('contours', item.slice_index)}" if segmented else "",
            "x": f"{x(item.slice_index):.1f}",
            "y": f"{y(item.probability):.1f}",
        }
        for item in record.slices
    ]
    start = key_slices[0] if key_slices else 0
    return {
        "positive": positive,
        "label_text": LABEL_TEXT.get(study.label, study.label),
        "probability_percent": study.probability * 100.0,
        "threshold_percent": study.threshold * 100.0,
        "slices": slices,
        "start": start,
        "start_slice": slices[start] if slices else None,
        "key_slices": [slices[index] for index in key_slices if index < len(slices)],
        "points": " ".join(f"{item['x']},{item['y']}" for item in slices),
        "threshold_y": f"{y(study.threshold):.1f}",
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "study": patient_facts(study),
        "skipped": record.skipped,
        "stored_in_pacs": record.details.stored_in_pacs,
        "base": base,
    }


def current_decision(
    registry: ModelRegistry,
    record: Prediction | Study,
) -> dict[str, Any]:
    """What the operating point in use now would decide for a stored result, beside what decided it.

    ``state`` is ``"same"`` (the threshold it was decided with is still in use), ``"different"``
    (another threshold now: ``threshold``, ``source``, ``label`` and whether the label ``changed``)
    or ``"unknown"`` (its model is no longer loaded, or the image was not a head CT slice).
    """
    point = registry.operating_point(record.model_name, record.model_version)
    if point is None or record.label == Label.OUT_OF_SCOPE:
        return {"state": "unknown"}
    if isinstance(record, Study):
        if record.aggregation != point.aggregation:
            return {"state": "unknown"}
        threshold = point.study
    else:
        threshold = point.slice
    if threshold.value == record.threshold:
        return {"state": "same", "source": threshold.source}
    label = Label.decided(threshold.flags(record.probability))
    return {
        "state": "different",
        "threshold": threshold.value,
        "source": threshold.source,
        "label": label,
        "changed": label != record.label,
    }
