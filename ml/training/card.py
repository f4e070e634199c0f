"""After the fit: the threshold, the metrics on validation and test, robustness, latency and the model card."""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.data.datasets import Sample
from ml.data.preprocessing import PreprocessConfig
from ml.data.splits import Split
from ml.evaluation.metrics import choose_threshold, patient_level, summarize
from ml.evaluation.robustness import robustness_report
from ml.model_io import predict_probabilities
from ml.models.classifier import GRADCAM_LAYERS
from ml.training.config import TrainConfig
from ml.training.fitting import FitResult


@dataclass
class Evaluation:
    """The threshold chosen on validation and what it gives on validation and, once, on test."""

    threshold: float
    test_probabilities: np.ndarray
    validation: dict[str, Any]
    test: dict[str, Any]
    robustness: dict[str, Any]


def evaluate(
    config: TrainConfig,
    model: keras.Model,
    split: Split,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    preprocess_config: PreprocessConfig,
) -> Evaluation:
    """Choose the threshold on validation, then measure both splits and the test split's robustness."""
    validation_probs = predict_probabilities(model, arrays["validation"])
    threshold = choose_threshold(labels["validation"], validation_probs, config.target_sensitivity)
    test_probs = predict_probabilities(model, arrays["test"])
    validation_report = evaluate_split(
        split.validation, validation_probs, threshold, config.bootstrap_resamples, config.seed
    )
    test_report = evaluate_split(split.test, test_probs, threshold, config.bootstrap_resamples, config.seed)
    robustness = robustness_report(model, split.test, preprocess_config, threshold)
    return Evaluation(threshold, test_probs, validation_report, test_report, robustness)


def evaluate_split(
    samples: Sequence[Sample], probabilities: np.ndarray, threshold: float, resamples: int, seed: int
) -> dict[str, Any]:
    """Metrics on one split, overall and per dataset, per slice and per patient."""
    report: dict[str, Any] = {}
    names = sorted({sample.dataset for sample in samples})
    for name in ["all", *names]:
        chosen = [i for i, sample in enumerate(samples) if name in ("all", sample.dataset)]
        labels = np.array([samples[i].label for i in chosen])
        probs = probabilities[chosen]
        groups = [samples[i].group for i in chosen]
        entry: dict[str, Any] = {
            "slice": summarize(labels, probs, threshold, groups, resamples, seed),
        }
        if len(set(groups)) < len(groups):
            patient_labels, patient_probs, _ = patient_level(labels, probs, groups)
            entry["patient"] = summarize(patient_labels, patient_probs, threshold, None, resamples, seed)
        report[name] = entry
    return report


def measure_latency(model: keras.Model, image_size: int, repeats: int = 30) -> float:
    """Median milliseconds of one forward pass on a single slice (compiled call); for a model
    with several outputs, until all of them are computed."""
    batch = tf.zeros((1, image_size, image_size, 1), tf.float32)
    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for _ in range(3):
        forward(batch)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        for output in tf.nest.flatten(forward(batch)):
            output.numpy()
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(timings))


INTENDED_USE = (
    "Research and decision support only: flags axial brain CT slices that may show "
    "intracranial haemorrhage for a qualified reader to review. Not for clinical use; "
    "not a diagnosis."
)


LIMITATIONS = (
    "Trained from scratch on about two thousand public slices (Kaggle head_ct figures "
    "and PhysioNet CT-ICH) from a small number of patients and institutions.",
    "Judges one slice at a time; small or thin bleeds next to the skull are missed more often.",
    "Expects an axial head CT slice shown in a brain window; other windows, modalities or "
    "body parts give meaningless probabilities.",
    "The threshold favours sensitivity (chosen for >= 95% on validation), so false positives are expected.",
    "Confidence intervals are wide: the test split holds few patients.",
)


def model_card(
    config: TrainConfig,
    split: Split,
    preprocess_config: PreprocessConfig,
    fitted: FitResult,
    evaluation: Evaluation,
    started: float,
) -> dict[str, Any]:
    """The model card: what the model is, how it was trained, what it measured and its limits."""
    model = fitted.model
    return {
        "name": config.name,
        "version": config.version,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": "Binary classification of intracranial haemorrhage on one axial brain CT slice.",
        "backbone": config.backbone,
        "parameters": int(model.count_params()),
        "input_shape": [config.image_size, config.image_size, 1],
        "threshold": round(evaluation.threshold, 6),
        "threshold_rule": f"highest threshold with sensitivity >= {config.target_sensitivity} on the validation split",
        "gradcam_layer": GRADCAM_LAYERS[config.backbone],
        "preprocessing": preprocess_config.to_dict(),
        "augmentation": fitted.augmentation.to_dict(),
        "training": {
            "datasets": config.datasets,
            "split_manifest": "split_manifest.json",
            "split": "by patient, stratified by dataset and patient label, seeded",
            "counts": {
                name: {
                    "images": len(members),
                    "positive": int(sum(s.label for s in members)),
                    "patients": len({s.group for s in members}),
                }
                for name, members in split.parts().items()
            },
            "epochs_run": fitted.epochs_run,
            "stopped_by_time_budget": fitted.stopped_by_time_budget,
            "averaged_epochs": fitted.averaged_epochs,
            "seconds": round(fitted.seconds, 1),
            "hardware": f"{platform.processor() or platform.machine()}, GPUs: {len(tf.config.list_physical_devices('GPU'))}",
            "config": asdict(config),
        },
        "metrics": {"validation": evaluation.validation, "test": evaluation.test},
        "robustness": evaluation.robustness,
        "cpu_latency_ms_per_slice": round(measure_latency(model, config.image_size), 2),
        "intended_use": INTENDED_USE,
        "limitations": list(LIMITATIONS),
        "reproduce": config.command(),
        "total_seconds": round(time.monotonic() - started, 1),
    }
