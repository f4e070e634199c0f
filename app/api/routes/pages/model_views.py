"""What the model page shows of a model card: facts, training data, metrics with intervals, robustness."""

from __future__ import annotations

from typing import Any

from app.api.routes.pages.filters import as_mapping, format_number, format_percent
from app.services.operating_points import OperatingPointInUse
from ml.evaluation.robustness import PERTURBATION_TITLES

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


def _metric_cell(entry: Any) -> dict[str, str]:
    entry = as_mapping(entry)
    interval = entry.get("ci95")
    low, high = (
        (interval[0], interval[1]) if isinstance(interval, list) and len(interval) == 2 else (None, None)
    )
    text = f"{format_number(low)} to {format_number(high)}" if low is not None and high is not None else ""
    return {"value": format_number(entry.get("value")), "interval": text}


def metrics_view(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of one split's metrics: dataset and level, counts, and each metric with its interval."""
    rows = []
    datasets = sorted(metrics, key=lambda name: (name != "all", name))
    for dataset in datasets:
        for level in ("slice", "patient"):
            summary = as_mapping(as_mapping(metrics.get(dataset)).get(level))
            values = as_mapping(summary.get("metrics"))
            if not values:
                continue
            rows.append(
                {
                    "dataset": DATASET_TITLES.get(dataset, dataset),
                    "level": "per patient" if level == "patient" else "per slice",
                    "n": summary.get("n"),
                    "n_positive": summary.get("n_positive"),
                    "cells": {name: _metric_cell(values.get(name)) for name in METRIC_TITLES},
                }
            )
    return rows


def card_view(card: dict[str, Any]) -> dict[str, Any]:
    """A model card in readable pieces; any field may be missing (small or older cards)."""
    facts: list[tuple[str, str]] = []
    if card.get("task"):
        facts.append(("Task", str(card["task"])))
    if card.get("created"):
        facts.append(("Created", str(card["created"]).replace("T", " ").replace("Z", " UTC")))
    if card.get("backbone"):
        facts.append(("Architecture", f"{card['backbone']} convolutional network"))
    if isinstance(card.get("parameters"), int):
        facts.append(("Parameters", f"{card['parameters']:,}"))
    shape = card.get("input_shape")
    if isinstance(shape, list) and shape:
        facts.append(("Input", " × ".join(str(size) for size in shape)))
    if card.get("threshold") is not None:
        rule = f" ({card['threshold_rule']})" if card.get("threshold_rule") else ""
        facts.append(("Decision threshold", f"{format_number(card.get('threshold'), 3)}{rule}"))
    if card.get("cpu_latency_ms_per_slice") is not None:
        facts.append(("CPU time per slice", f"{format_number(card.get('cpu_latency_ms_per_slice'), 1)} ms"))
    training = as_mapping(card.get("training"))
    counts = [
        {
            "split": split.capitalize(),
            "images": as_mapping(values).get("images"),
            "positive": as_mapping(values).get("positive"),
            "patients": as_mapping(values).get("patients"),
        }
        for split, values in as_mapping(training.get("counts")).items()
    ]
    training_facts: list[tuple[str, str]] = []
    if isinstance(training.get("datasets"), list):
        names = [DATASET_TITLES.get(str(name), str(name)) for name in training["datasets"]]
        training_facts.append(("Datasets", ", ".join(names)))
    if training.get("split"):
        training_facts.append(("Split", str(training["split"])))
    if training.get("epochs_run") is not None:
        training_facts.append(("Epochs", str(training["epochs_run"])))
    if training.get("seconds") is not None:
        training_facts.append(("Training time", f"{format_number(training['seconds'] / 60, 1)} minutes"))
    if training.get("hardware"):
        training_facts.append(("Hardware", str(training["hardware"])))
    metrics = as_mapping(card.get("metrics"))
    splits = [
        {"name": split, "title": title, "rows": metrics_view(as_mapping(metrics.get(split)))}
        for split, title in (("validation", "Validation split"), ("test", "Test split"))
    ]
    robustness = as_mapping(card.get("robustness"))
    perturbations = [
        {
            "name": PERTURBATION_TITLES.get(name, name.replace("_", " ").capitalize()),
            "mean": format_number(as_mapping(values).get("mean_abs_change"), 3),
            "max": format_number(as_mapping(values).get("max_abs_change"), 3),
            "flips": format_percent(as_mapping(values).get("flip_rate")),
        }
        for name, values in robustness.items()
        if isinstance(values, dict)
    ]
    external = as_mapping(metrics.get("external_bhsd_seg"))
    unseen = None
    if external.get("slices"):
        unseen = {
            "slices": external.get("slices"),
            "slices_flagged": external.get("slices_flagged"),
            "sensitivity": _metric_cell(
                {"value": external.get("sensitivity"), "ci95": external.get("sensitivity_ci95")}
            ),
            "scans": external.get("scans"),
            "scans_flagged": external.get("scans_flagged"),
            "scan_sensitivity": _metric_cell(
                {"value": external.get("scan_sensitivity"), "ci95": external.get("scan_sensitivity_ci95")}
            ),
        }
    limitations = card.get("limitations")
    return {
        "name": card.get("name", "unnamed model"),
        "version": card.get("version", "unknown"),
        "facts": facts,
        "intended_use": card.get("intended_use"),
        "limitations": [str(item) for item in limitations] if isinstance(limitations, list) else [],
        "training_facts": training_facts,
        "counts": counts,
        "splits": [split for split in splits if split["rows"]],
        "metric_titles": METRIC_TITLES,
        "unseen": unseen,
        "robustness_n": robustness.get("n"),
        "perturbations": perturbations,
        "preprocessing": [
            (str(key), str(value)) for key, value in as_mapping(card.get("preprocessing")).items()
        ],
        "reproduce": card.get("reproduce"),
    }


def operating_point_view(point: OperatingPointInUse, card_point: OperatingPointInUse) -> dict[str, Any]:
    """The thresholds the model decides with, where they come from, and the card's beside them."""
    return {
        "site": point.from_site,
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
