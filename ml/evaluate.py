"""Command line: evaluate a model bundle on any labelled CSV of images.

Example::

    python -m ml.evaluate --model-dir model_store/ich-compact/1.1.0 --labels my_site/labels.csv \
        --image-col image --label-col label --group-col patient_id

Prints and writes JSON with accuracy, sensitivity, specificity, precision, F1 and AUC-ROC with
95% bootstrap intervals, per slice and (when a group column exists) per patient, and saves ROC,
confusion-matrix and calibration plots. Per patient twice: ``patient`` counts a patient positive
when any slice reaches the slice threshold; ``study`` decides each patient as the service
decides a study (the card's ``study_aggregation`` against its ``study_threshold``).

With ``--choose-threshold 0.95`` it also reports the highest threshold that keeps sensitivity at
0.95 on these images (and, with a patient column, the study threshold that keeps it per
patient), with the metrics there: the card's thresholds were chosen on the training
collections, and images from another site may need another operating point.
``--write-operating-point FILE`` writes them as a site operating point, which the service
decides with when ``ICH_OPERATING_POINT=FILE`` (:mod:`ml.operating_point`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from ml.cli import ArgumentParser, data_errors
from ml.data.datasets import Sample, load_image, read_labelled_csv
from ml.data.preprocessing import preprocess
from ml.errors import DataError, MissingDataFile
from ml.evaluation.metrics import (
    binary_metrics,
    choose_threshold,
    confusion_counts,
    json_number,
    patient_level,
    summarize,
)
from ml.evaluation.plots import save_calibration, save_confusion_matrix, save_roc
from ml.evaluation.study import compare_aggregations, study_rule
from ml.evaluation.study_outline import grid_blood_px, series_sums, study_flags
from ml.model_io import ModelBundle, load_bundle, predict_probabilities
from ml.operating_point import ChosenOn, MeasuredAt, ModelName, OperatingPoint, StudyMeasuredAt

logger = logging.getLogger(__name__)


def predict_samples(
    bundle: ModelBundle, samples: Sequence[Sample], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities for image files of any format and size, via the bundle's preprocessing; for a
    card with the outline criterion (``study_outline_px``) also each slice's outlined pixels on the
    model grid, from the same pass (else ``None``)."""
    config = bundle.preprocess_config
    card = bundle.model_card
    blood_threshold = card.blood_threshold
    outline = card.study_outline_px is not None and blood_threshold is not None
    probabilities: list[float] = []
    pixels: list[int] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = np.stack([preprocess(_read_pixels(sample.path), config).image for sample in chunk])
        if not outline:
            probabilities.extend(predict_probabilities(bundle.model, batch).tolist())
            continue
        outputs = bundle.model(batch.astype(np.float32), training=False)
        probabilities.extend(np.asarray(outputs["probability"]).ravel().tolist())
        blood = 1.0 - np.asarray(outputs["mask"])[..., 0]
        pixels.extend(
            grid_blood_px(blood, float(blood_threshold or 0.0), int(card.min_component_px or 0)).tolist()
        )
    return np.array(probabilities, dtype=np.float64), np.array(pixels, np.int64) if outline else None


def _read_pixels(path: Path) -> np.ndarray:
    """The pixels of one listed image; a missing or unreadable file is the CSV's error, not a bug."""
    if not path.is_file():
        raise MissingDataFile(f"Image not found: {path}; image paths are read relative to the CSV.")
    return load_image(path)


def site_threshold(
    labels: np.ndarray, probabilities: np.ndarray, target_sensitivity: float, card_threshold: float
) -> dict[str, Any]:
    """The highest threshold with at least ``target_sensitivity`` on these images, and what it
    gives here next to the card's threshold.

    Raises:
        ValueError: no positive image, or a target outside (0, 1].
    """
    threshold = choose_threshold(labels, probabilities, target_sensitivity)

    def at(value: float) -> dict[str, Any]:
        metrics = binary_metrics(labels, probabilities, value)
        return {
            "threshold": round(value, 6),
            **{name: json_number(metrics[name]) for name in ("sensitivity", "specificity", "accuracy")},
            "confusion": confusion_counts(labels, probabilities, value),
        }

    return {
        "target_sensitivity": target_sensitivity,
        "chosen": at(threshold),
        "card": at(card_threshold),
        "note": (
            "Chosen on these images, so its figures here are optimistic: confirm it on other "
            "images from the same site before relying on it."
        ),
    }


def site_study_threshold(
    bundle: ModelBundle,
    labels: np.ndarray,
    probabilities: np.ndarray,
    groups: Sequence[str],
    target_sensitivity: float,
) -> dict[str, Any] | None:
    """:func:`site_threshold` per patient, each decided as the service decides a study (the
    card's aggregation); None when no patient has haemorrhage."""
    aggregation, card_threshold, _ = study_rule(bundle.card, bundle.threshold)
    studies = compare_aggregations(labels, probabilities, groups)[aggregation]
    if not studies["labels"].any():
        return None
    report = site_threshold(studies["labels"], studies["probabilities"], target_sensitivity, card_threshold)
    return {"aggregation": aggregation, "patients": int(studies["labels"].size), **report}


def site_operating_point(
    bundle: ModelBundle,
    labels: np.ndarray,
    probabilities: np.ndarray,
    groups: Sequence[str] | None,
    target_sensitivity: float,
    labels_name: str,
) -> OperatingPoint:
    """The operating point a site would install (``ICH_OPERATING_POINT``): the thresholds that keep
    ``target_sensitivity`` on these images (per slice, and per patient when ``groups`` are
    given), with what they gave here and where they were chosen.

    The thresholds are written unrounded, so the service flags every image counted here.

    Raises:
        ValueError: no positive image, or a threshold of 0 or 1 (probabilities that saturate).
    """

    def measured(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
        metrics = binary_metrics(truth, scores, threshold)
        return {name: json_number(metrics[name]) for name in ("sensitivity", "specificity")}

    slice_threshold = choose_threshold(labels, probabilities, target_sensitivity)
    study_threshold = aggregation = study = None
    if groups is not None:
        aggregation, _, _ = study_rule(bundle.card, bundle.threshold)
        studies = compare_aggregations(labels, probabilities, groups)[aggregation]
        if studies["labels"].any():
            study_threshold = choose_threshold(
                studies["labels"], studies["probabilities"], target_sensitivity
            )
            study = {
                "patients": int(studies["labels"].size),
                **measured(studies["labels"], studies["probabilities"], study_threshold),
            }
    try:
        return OperatingPoint(
            model=ModelName(name=bundle.name, version=bundle.version),
            slice_threshold=slice_threshold,
            study_threshold=study_threshold,
            study_aggregation=aggregation if study_threshold is not None else None,
            chosen_on=ChosenOn(
                labels=labels_name,
                images=int(labels.size),
                positive_images=int(labels.sum()),
                target_sensitivity=target_sensitivity,
                slice=MeasuredAt(**measured(labels, probabilities, slice_threshold)),
                study=StudyMeasuredAt(**study) if study is not None else None,
            ),
            created=OperatingPoint.today(),
        )
    except ValidationError as exc:
        raise ValueError(
            f"The thresholds chosen here ({slice_threshold:.6g} per slice, {study_threshold} per patient) "
            f"cannot be an operating point: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}. "
            "Probabilities of 0 or 1 mean the model saturates on these images."
        ) from exc


def study_report(
    bundle: ModelBundle,
    labels: np.ndarray,
    probabilities: np.ndarray,
    groups: Sequence[str],
    resamples: int,
    outlined_px: np.ndarray | None = None,
) -> dict[str, Any]:
    """Each group (patient) decided as the service decides a study: the card's aggregation of
    slice probabilities against its study threshold; with the card's outline criterion and each
    slice's ``outlined_px``, also the decisions of the whole rule (``rule``), either criterion
    flagging."""
    aggregation, threshold, problems = study_rule(bundle.card, bundle.threshold)
    for problem in problems:
        logger.warning("Model card %s/%s: %s.", bundle.name, bundle.version, problem)
    studies = compare_aggregations(labels, probabilities, groups)[aggregation]
    report: dict[str, Any] = {
        "aggregation": aggregation,
        "threshold": round(threshold, 6),
        **summarize(studies["labels"], studies["probabilities"], threshold, None, resamples),
    }
    outline_px = bundle.model_card.study_outline_px
    if outline_px is not None and outlined_px is not None:
        volumes = series_sums(outlined_px, groups)
        flagged = study_flags(studies["probabilities"], volumes, threshold, outline_px)
        truth = studies["labels"].astype(bool)
        report["rule"] = {
            "outline_px": outline_px,
            "flagged_by_outline_alone": int(np.sum(flagged & (studies["probabilities"] < threshold))),
            "sensitivity": {
                "count": f"{int(np.sum(flagged & truth))}/{int(truth.sum())}",
                "value": json_number(float(np.mean(flagged[truth]))) if truth.any() else None,
            },
            "specificity": {
                "count": f"{int(np.sum(~flagged & ~truth))}/{int((~truth).sum())}",
                "value": json_number(float(np.mean(~flagged[~truth]))) if (~truth).any() else None,
            },
        }
    return report


def evaluate(
    bundle: ModelBundle,
    samples: Sequence[Sample],
    output_dir: Path,
    threshold: float | None = None,
    resamples: int = 1000,
    target_sensitivity: float | None = None,
    operating_point_file: Path | None = None,
    labels_name: str = "labels.csv",
) -> dict[str, Any]:
    """Metrics (and plots in ``output_dir``) of ``bundle`` on ``samples``; with
    ``target_sensitivity`` also the thresholds these images call for (:func:`site_threshold`,
    per slice and per patient), and with ``operating_point_file`` those thresholds written as a
    site operating point (:func:`site_operating_point`; ``labels_name`` names the CSV there)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    threshold = bundle.threshold if threshold is None else threshold
    labels = np.array([sample.label for sample in samples], dtype=np.int32)
    groups = [sample.group for sample in samples]
    if target_sensitivity is not None and not labels.any():
        raise DataError("Choosing a threshold needs images labelled 1 (haemorrhage) in the CSV.")
    probabilities, outlined_px = predict_samples(bundle, samples)
    has_groups = len(set(groups)) < len(groups)
    report: dict[str, Any] = {
        "model": {"name": bundle.name, "version": bundle.version},
        "slice": summarize(labels, probabilities, threshold, groups if has_groups else None, resamples),
    }
    save_roc(labels, probabilities, threshold, output_dir / "roc_slice.png", "ROC, per slice")
    save_confusion_matrix(labels, probabilities, threshold, output_dir / "confusion_slice.png", "Per slice")
    save_calibration(labels, probabilities, output_dir / "calibration_slice.png", "Calibration, per slice")
    if has_groups:
        patient_labels, patient_probs, _ = patient_level(labels, probabilities, groups)
        report["patient"] = summarize(patient_labels, patient_probs, threshold, None, resamples)
        save_confusion_matrix(
            patient_labels, patient_probs, threshold, output_dir / "confusion_patient.png", "Per patient"
        )
        report["study"] = study_report(bundle, labels, probabilities, groups, resamples, outlined_px)
    if target_sensitivity is not None:
        report["site_threshold"] = site_threshold(labels, probabilities, target_sensitivity, bundle.threshold)
        if has_groups:
            report["site_threshold"]["study"] = site_study_threshold(
                bundle, labels, probabilities, groups, target_sensitivity
            )
        if operating_point_file is not None:
            point = site_operating_point(
                bundle, labels, probabilities, groups if has_groups else None, target_sensitivity, labels_name
            )
            point.write(operating_point_file)
            report["site_threshold"]["operating_point_file"] = str(operating_point_file)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(
        prog="python -m ml.evaluate", description="Evaluate a model bundle on a labelled CSV."
    )
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True, help="CSV; image paths relative to it")
    parser.add_argument("--image-col", default="image")
    parser.add_argument("--label-col", default="label")
    parser.add_argument("--group-col", default="group")
    parser.add_argument("--output", type=Path, help="folder for metrics.json and plots")
    parser.add_argument("--threshold", type=float, help="override the model card's threshold")
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    parser.add_argument(
        "--choose-threshold",
        type=float,
        metavar="SENSITIVITY",
        help="also report the highest threshold keeping this sensitivity (0-1] on these images",
    )
    parser.add_argument(
        "--write-operating-point",
        type=Path,
        metavar="FILE",
        help="with --choose-threshold: write the chosen thresholds as a site operating point (JSON) "
        "for the service's ICH_OPERATING_POINT",
    )
    args = parser.parse_args(argv)
    if args.choose_threshold is not None and not 0 < args.choose_threshold <= 1:
        parser.error("--choose-threshold takes a sensitivity in (0, 1], for example 0.95.")
    if args.write_operating_point is not None and args.choose_threshold is None:
        parser.error("--write-operating-point needs --choose-threshold, for example --choose-threshold 0.95.")
    output = args.output or Path("artifacts") / "evaluation" / args.labels.parent.name
    with data_errors(parser):
        samples = read_labelled_csv(args.labels, args.image_col, args.label_col, args.group_col)
        bundle = load_bundle(args.model_dir)
        report = evaluate(
            bundle,
            samples,
            output,
            args.threshold,
            args.bootstrap_resamples,
            args.choose_threshold,
            operating_point_file=args.write_operating_point,
            labels_name=args.labels.name,
        )
    print(json.dumps(report, indent=1))
    logger.info("Metrics and plots written to %s", output)
    if args.write_operating_point is not None:
        logger.info(
            "Site operating point written to %s; install it with ICH_OPERATING_POINT=%s.",
            args.write_operating_point,
            args.write_operating_point,
        )


if __name__ == "__main__":
    main()
