"""What the model page shows of a model card: facts, training data, metrics with intervals, robustness."""

from __future__ import annotations

from typing import Any

from app.api.routes.pages.filters import format_number, format_percent
from app.services.card_views import CardMetrics, CollectionMeasures, Measure
from app.services.inference import SliceClassifier, SliceSegmenter
from app.services.operating_points import OperatingPointInUse
from app.services.segmentation import help_sentences
from ml.evaluation.robustness import PERTURBATION_TITLES
from ml.model_card import ModelCard, TrainingSummary

DATASET_TITLES = {"all": "All images", "head_ct": "head_ct (Kaggle)", "ct_ich": "CT-ICH (PhysioNet)"}
METRIC_TITLES = {
    "auc": "AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision",
    "f1": "F1",
    "accuracy": "Accuracy",
}
PLOTS = {
    "roc_test": ("ROC curve, test split", "ROC curve of the model on the held-out test split."),
    "calibration_test": (
        "Calibration, test split",
        "Calibration plot: predicted probability against the observed share of haemorrhage, test split.",
    ),
    "confusion_test": (
        "Confusion matrix, test split",
        "Confusion matrix at the decision threshold on the test split.",
    ),
}


def _metric_cell(measure: Measure) -> dict[str, str]:
    interval = measure.ci95
    text = f"{format_number(interval[0])} to {format_number(interval[1])}" if interval else ""
    return {"value": format_number(measure.value), "interval": text}


def metrics_view(split: dict[str, CollectionMeasures]) -> list[dict[str, Any]]:
    """Rows of one split's metrics: dataset and level, counts, and each metric with its interval."""
    rows = []
    for dataset in sorted(split, key=lambda name: (name != "all", name)):
        collection = split[dataset]
        for level, summary in (("per slice", collection.slice), ("per patient", collection.patient)):
            if not summary.metrics:
                continue
            rows.append(
                {
                    "dataset": DATASET_TITLES.get(dataset, dataset),
                    "level": level,
                    "n": summary.n,
                    "n_positive": summary.n_positive,
                    "cells": {
                        name: _metric_cell(summary.metrics.get(name, Measure())) for name in METRIC_TITLES
                    },
                }
            )
    return rows


def card_facts(card: ModelCard) -> list[tuple[str, str]]:
    """The card's headline facts, those it states: task, date, architecture, size, threshold, time."""
    facts: list[tuple[str, str]] = []
    if card.task:
        facts.append(("Task", card.task))
    if card.created:
        facts.append(("Created", card.created.replace("T", " ").replace("Z", " UTC")))
    if card.backbone:
        facts.append(("Architecture", f"{card.backbone} convolutional network"))
    if card.parameters is not None:
        facts.append(("Parameters", f"{card.parameters:,}"))
    if card.input_shape:
        facts.append(("Input", " × ".join(str(size) for size in card.input_shape)))
    if card.threshold is not None:
        rule = f" ({card.threshold_rule})" if card.threshold_rule else ""
        facts.append(("Decision threshold", f"{format_number(card.threshold, 3)}{rule}"))
    if card.cpu_latency_ms_per_slice is not None:
        facts.append(("CPU time per slice", f"{format_number(card.cpu_latency_ms_per_slice, 1)} ms"))
    return facts


def training_facts(training: TrainingSummary) -> list[tuple[str, str]]:
    """How the model was trained, as far as the card says: collections, split, epochs, time, hardware."""
    facts: list[tuple[str, str]] = []
    if training.datasets is not None:
        names = [DATASET_TITLES.get(name, name) for name in training.datasets]
        facts.append(("Datasets", ", ".join(names)))
    if training.split:
        facts.append(("Split", training.split))
    if training.epochs_run is not None:
        facts.append(("Epochs", str(training.epochs_run)))
    if training.seconds is not None:
        facts.append(("Training time", f"{format_number(training.seconds / 60, 1)} minutes"))
    if training.hardware:
        facts.append(("Hardware", training.hardware))
    return facts


def unseen_view(metrics: CardMetrics) -> dict[str, Any] | None:
    """Sensitivity on the collection the model never saw (slices and scans); None without one."""
    external = metrics.external_bhsd_seg
    if not external.slices:
        return None
    return {
        "slices": external.slices,
        "slices_flagged": external.slices_flagged,
        "sensitivity": _metric_cell(external.slice_measure),
        "scans": external.scans,
        "scans_flagged": external.scans_flagged,
        "scan_sensitivity": _metric_cell(external.scan_measure),
    }


def card_view(card: ModelCard) -> dict[str, Any]:
    """A model card in readable pieces; any field but the name and version may be missing (small
    or older cards)."""
    counts = [
        {
            "split": split.capitalize(),
            "images": values.get("images"),
            "positive": values.get("positive"),
            "patients": values.get("patients"),
        }
        for split, values in card.training.counts.items()
    ]
    metrics = CardMetrics.from_metrics(card.metrics)
    splits = [
        {"name": split, "title": title, "rows": metrics_view(measures)}
        for split, title, measures in (
            ("validation", "Validation split", metrics.validation),
            ("test", "Test split", metrics.test),
        )
    ]
    perturbations = [
        {
            "name": PERTURBATION_TITLES.get(name, name.replace("_", " ").capitalize()),
            "mean": format_number(values.get("mean_abs_change"), 3),
            "max": format_number(values.get("max_abs_change"), 3),
            "flips": format_percent(values.get("flip_rate")),
        }
        for name, values in card.robustness.items()
        if isinstance(values, dict)
    ]
    return {
        "name": card.name,
        "version": card.version,
        "facts": card_facts(card),
        "intended_use": card.intended_use,
        "limitations": card.limitations,
        "training_facts": training_facts(card.training),
        "counts": counts,
        "splits": [split for split in splits if split["rows"]],
        "metric_titles": METRIC_TITLES,
        "unseen": unseen_view(metrics),
        "robustness_n": card.robustness.get("n"),
        "perturbations": perturbations,
        "preprocessing": [(str(key), str(value)) for key, value in card.preprocessing.items()],
        "reproduce": card.reproduce,
    }


def outliner_view(
    outliner: SliceClassifier | SliceSegmenter | None, classifier: SliceClassifier
) -> dict[str, Any] | None:
    """What the model page says of the model that outlines the serving classifier's slices (the
    classifier itself when it is a multitask model); None when no model outlines them."""
    if outliner is None:
        return None
    card = outliner.model_card
    return {
        "name": outliner.name,
        "version": outliner.version,
        "same_model": outliner is classifier,
        "help": help_sentences(card.raw),
        "intended_use": card.intended_use,
        "limitations": card.limitations,
    }


def operating_point_view(
    point: OperatingPointInUse,
    card_point: OperatingPointInUse,
    outline_px: int | None = None,
    grid: int | None = None,
) -> dict[str, Any]:
    """The thresholds the model decides with, where they come from, and the card's beside them;
    with the card's outline criterion of the study rule (``study_outline_px``), that too."""
    return {
        "site": point.from_site,
        "outline_px": outline_px,
        "grid": grid,
        "rows": [
            {
                "decision": "Slice",
                "threshold": point.slice.value,
                "source": point.slice.source,
                "card": card_point.slice.value,
            },
            {
                "decision": f"Study ({point.aggregation})",
                "threshold": point.study.value,
                "source": point.study.source,
                "card": card_point.study.value,
            },
        ],
    }
