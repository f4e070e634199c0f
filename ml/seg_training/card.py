"""After the fit: the post-processing chosen on validation, the measures on test and the model card."""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.data.preprocessing import PreprocessConfig
from ml.data.segmentation import (
    SUBTYPE_COLOURS,
    SUBTYPES,
)
from ml.seg_reports import (
    FEW_POSITIVES,
    ct_ich_detection_report,
    evaluate_segmentation,
    normal_slices_report,
    pointing_game_limitations,
    subtype_report,
)
from ml.seg_training.config import SegTrainConfig, reproduce_command
from ml.seg_training.data import SegData, merge
from ml.seg_training.postprocessing import choose_postprocessing, predict_masks
from ml.training import FitResult, measure_latency

logger = logging.getLogger(__name__)


def measure(
    config: SegTrainConfig, model: keras.Model, data: SegData
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Choose the post-processing on validation, then measure validation and, once, test.

    Returns the post-processing (the chosen rule and the candidates) and the metrics.
    """
    parts, normal = data.parts, data.normal
    validation_masks, _ = predict_masks(model, parts["bhsd_validation"].images)
    validation_normal, _ = predict_masks(model, normal["validation"].images)
    postprocessing = choose_postprocessing(
        validation_masks, parts["bhsd_validation"].masks, validation_normal
    )
    chosen = postprocessing["chosen"]
    threshold, min_px = float(chosen["blood_threshold"]), int(chosen["min_component_px"])
    logger.info("Post-processing chosen on validation: %s", chosen)

    test_masks, test_subtypes_bhsd = predict_masks(model, parts["bhsd_test"].images)
    test_normal, _ = predict_masks(model, normal["test"].images)
    test_ct_ich_masks, test_subtypes = predict_masks(model, parts["ct_ich_test"].images)
    _, validation_subtypes = predict_masks(model, parts["ct_ich_validation"].images)
    resamples, seed = config.bootstrap_resamples, config.seed
    metrics = {
        "validation": {
            "segmentation": evaluate_segmentation(
                validation_masks, parts["bhsd_validation"], threshold, min_px, resamples, seed
            ),
            "normal_ct_ich_slices": normal_slices_report(validation_normal, threshold, min_px),
            "subtypes_ct_ich": subtype_report(
                parts["ct_ich_validation"], validation_subtypes, resamples, seed
            ),
        },
        "test": {
            "segmentation": evaluate_segmentation(
                test_masks, parts["bhsd_test"], threshold, min_px, resamples, seed
            ),
            "normal_ct_ich_slices": normal_slices_report(test_normal, threshold, min_px),
            "subtypes_ct_ich": subtype_report(parts["ct_ich_test"], test_subtypes, resamples, seed),
            "subtypes_bhsd_seg": subtype_report(parts["bhsd_test"], test_subtypes_bhsd, resamples, seed),
            "subtypes_held_out": subtype_report(
                merge(parts["ct_ich_test"], parts["bhsd_test"]),
                np.concatenate([test_subtypes, test_subtypes_bhsd]),
                resamples,
                seed,
            ),
            "ct_ich_slices": ct_ich_detection_report(
                parts["ct_ich_test"], test_ct_ich_masks, threshold, min_px, resamples, seed
            ),
        },
    }
    return postprocessing, metrics


INTENDED_USE = (
    "Research and decision support only: outlines where a slice may show intracranial "
    "haemorrhage, names the likely subtypes and estimates areas and volumes for a "
    "qualified reader to check. Not for clinical use; not a diagnosis."
)


LIMITATIONS = (
    "Pixel masks exist for 52 slices from 38 scans (bhsd_seg); the held-out volumes are few, "
    "so Dice and IoU carry wide confidence intervals.",
    "Subtype labels come from CT-ICH slice labels and bhsd_seg masks; subtypes with fewer "
    f"than {FEW_POSITIVES} positive test slices are marked too few to trust.",
    "Chronic (hypodense) collections are labelled in part of bhsd_seg and are segmented poorly.",
    "Areas and volumes are only as good as the outline; the bedside ABC/2 estimate is shown beside the voxel count for comparison.",
    "Expects the same input as the classifier: an axial head CT slice in a brain window.",
)


def model_card(
    config: SegTrainConfig,
    classifier_card: dict[str, Any],
    preprocess_config: PreprocessConfig,
    data: SegData,
    fitted: FitResult,
    postprocessing: dict[str, Any],
    metrics: dict[str, Any],
    pointing: dict[str, Any],
) -> dict[str, Any]:
    """The model card without ``total_seconds``: the model, its training, measures and limits."""
    chosen = postprocessing["chosen"]
    size = preprocess_config.image_size
    return {
        "name": config.name,
        "version": config.version,
        "kind": "segmentation",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "task": (
            "Segmentation of intracranial haemorrhage by subtype on one axial brain CT slice, "
            "and per-slice subtype probabilities."
        ),
        "architecture": "compact U-Net (4 poolings, separable convolutions in the deep stages) with a subtype head on the bottleneck",
        "parameters": int(fitted.model.count_params()),
        "input_shape": [size, size, 1],
        "classes": ["background", *SUBTYPES],
        "subtypes": list(SUBTYPES),
        "subtype_colours": {
            name: "#{:02x}{:02x}{:02x}".format(*colour) for name, colour in SUBTYPE_COLOURS.items()
        },
        "blood_threshold": float(chosen["blood_threshold"]),
        "min_component_px": int(chosen["min_component_px"]),
        "postprocessing": postprocessing,
        "preprocessing": preprocess_config.to_dict(),
        "preprocessing_source": f"{classifier_card['name']} {classifier_card['version']} (identical pixels to the classifier)",
        "augmentation": fitted.augmentation.to_dict(),
        "training": {
            "datasets": [
                "bhsd_seg (masks)",
                "ct_ich (normal slices: empty masks; haemorrhage slices: subtype labels only)",
            ],
            "split_manifest": "split_manifest.json",
            "split": "bhsd_seg by volume (seeded; every subtype in training and test); ct_ich by the classifier's patient split",
            "counts": {
                name: {
                    "slices": len(part.samples),
                    "with_blood": int(sum(s.any_blood for s in part.samples)),
                    "groups": len(set(part.groups)),
                }
                for name, part in data.parts.items()
            },
            "epochs_run": fitted.epochs_run,
            "stopped_by_time_budget": fitted.stopped_by_time_budget,
            "seconds": round(fitted.seconds, 1),
            "hardware": f"{platform.processor() or platform.machine()}, GPUs: {len(tf.config.list_physical_devices('GPU'))}",
            "config": asdict(config),
        },
        "metrics": metrics,
        "pointing_game": pointing,
        "cpu_latency_ms_per_slice": round(measure_latency(fitted.model, size), 2),
        "intended_use": INTENDED_USE,
        "limitations": [*LIMITATIONS, *pointing_game_limitations(pointing["test_volumes"])],
        "reproduce": reproduce_command(config),
    }
