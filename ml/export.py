"""Command line: finish and check a model bundle before it ships.

Recomputes the test-split predictions from the bundle's split manifest, writes the ROC,
confusion-matrix and calibration plots next to the model, checks that the metrics in the card
are reproduced, measures robustness on the test split and sensitivity on a collection the
classifier never saw (``bhsd_seg``), checks the bundle's size, and can export a TensorFlow
SavedModel for a model server::

    python -m ml.export --model-dir model_store/ich-compact/1.0.0 [--saved-model build/saved_model]
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ml.cli import ArgumentParser, data_errors
from ml.data.datasets import Sample, default_data_dir, read_datasets
from ml.data.segmentation import read_bhsd
from ml.data.splits import load_manifest, select
from ml.evaluation.metrics import binary_metrics, choose_threshold, summarize, wilson_interval
from ml.evaluation.plots import save_calibration, save_confusion_matrix, save_roc
from ml.evaluation.robustness import robustness_report
from ml.evaluation.study import compare_aggregations
from ml.model_io import ModelBundle, load_bundle, predict_probabilities
from ml.seg_training import prepare
from ml.training import preprocess_samples

logger = logging.getLogger(__name__)

MAX_BUNDLE_MIB = 20.0


def split_samples(bundle: ModelBundle, data_dir: Path, split: str) -> list[Sample]:
    """The samples of one split of the bundle's manifest, read from ``data_dir``."""
    manifest = load_manifest(bundle.path / bundle.card["training"]["split_manifest"])
    samples = read_datasets(data_dir, bundle.card["training"]["datasets"])
    return select(samples, manifest[split])


def split_probabilities(
    bundle: ModelBundle, samples: list[Sample], cache_dir: Path | None = None
) -> np.ndarray:
    images = preprocess_samples(samples, bundle.preprocess_config, cache_dir)
    return predict_probabilities(bundle.model, images)


def write_plots(
    bundle_dir: Path, samples: list[Sample], probabilities: np.ndarray, threshold: float
) -> list[str]:
    """Test-split plots, overall and per dataset; returns the file names written."""
    written = []
    labels = np.array([sample.label for sample in samples])
    datasets = sorted({sample.dataset for sample in samples})
    for name in ["all", *datasets]:
        chosen = np.array([name in ("all", sample.dataset) for sample in samples])
        suffix = "test" if name == "all" else f"test_{name}"
        title = "test split" if name == "all" else f"test split, {name}"
        if len(set(labels[chosen])) < 2:
            continue
        save_roc(
            labels[chosen],
            probabilities[chosen],
            threshold,
            bundle_dir / f"roc_{suffix}.png",
            f"ROC, {title}",
        )
        save_confusion_matrix(
            labels[chosen], probabilities[chosen], threshold, bundle_dir / f"confusion_{suffix}.png", title
        )
        save_calibration(
            labels[chosen],
            probabilities[chosen],
            bundle_dir / f"calibration_{suffix}.png",
            f"Calibration, {title}",
        )
        written += [f"roc_{suffix}.png", f"confusion_{suffix}.png", f"calibration_{suffix}.png"]
    return written


def check_card_metrics(card: dict[str, Any], samples: list[Sample], probabilities: np.ndarray) -> list[str]:
    """Differences between the card's test metrics and a recomputation (empty when equal)."""
    problems = []
    threshold = float(card["threshold"])
    for name, entry in card["metrics"]["test"].items():
        chosen = [i for i, sample in enumerate(samples) if name in ("all", sample.dataset)]
        labels = np.array([samples[i].label for i in chosen])
        recomputed = binary_metrics(labels, probabilities[chosen], threshold)
        for metric, stored in entry["slice"]["metrics"].items():
            value = stored["value"]
            if value is None:
                continue
            if abs(recomputed[metric] - value) > 0.01:
                problems.append(f"{name} {metric}: card {value}, recomputed {recomputed[metric]:.4f}")
    return problems


def choose_study_aggregation(
    validation: list[Sample], validation_probs: np.ndarray, target_sensitivity: float = 0.95
) -> dict[str, Any]:
    """Pick the study aggregation with the best patient-level AUC on CT-ICH validation patients.

    Ties go to the simplest (``max``). The study threshold is then chosen on the same
    patients for the target sensitivity.
    """
    chosen = [i for i, sample in enumerate(validation) if sample.dataset == "ct_ich"]
    labels = [validation[i].label for i in chosen]
    groups = [validation[i].group for i in chosen]
    compared = compare_aggregations(labels, validation_probs[chosen], groups)
    scores = {
        method: binary_metrics(values["labels"], values["probabilities"], 0.5)["auc"]
        for method, values in compared.items()
    }
    order = ["max", "top3_mean", "noisy_or"]
    best = max(order, key=lambda method: (round(scores[method], 4), -order.index(method)))
    threshold = choose_threshold(
        compared[best]["labels"], compared[best]["probabilities"], target_sensitivity
    )
    return {
        "method": best,
        "threshold": round(float(threshold), 6),
        "validation_patient_auc": {method: round(score, 4) for method, score in scores.items()},
        "validation_patients": int(len(compared[best]["labels"])),
    }


def study_test_metrics(
    test: list[Sample], test_probs: np.ndarray, method: str, threshold: float, resamples: int = 1000
) -> dict[str, Any]:
    """Study-level metrics on the CT-ICH test patients (each patient's slices form a study)."""
    chosen = [i for i, sample in enumerate(test) if sample.dataset == "ct_ich"]
    compared = compare_aggregations(
        [test[i].label for i in chosen], test_probs[chosen], [test[i].group for i in chosen]
    )
    values = compared[method]
    return summarize(values["labels"], values["probabilities"], threshold, None, resamples)


def external_sensitivity(
    bundle: ModelBundle, data_dir: Path, cache_dir: Path | None = None
) -> dict[str, Any] | None:
    """Sensitivity at the bundle's threshold on every ``bhsd_seg`` slice: another collection (other
    hospitals and scanners), never used to train or choose anything for the classifier, in which
    every slice shows haemorrhage. Per slice and per scan (a scan counts if any slice is flagged).
    None when the data folder has no ``bhsd_seg``."""
    if not (Path(data_dir) / "bhsd_seg" / "labels.csv").is_file():
        logger.warning("No bhsd_seg in %s: the card gets no sensitivity on an unseen collection.", data_dir)
        return None
    # The same preprocessed slices the segmentation model's training and pointing game use.
    samples = read_bhsd(data_dir)
    images = prepare(samples, bundle.preprocess_config, cache_dir).images[..., np.newaxis]
    flagged = predict_probabilities(bundle.model, images) >= bundle.threshold
    scans: dict[str, bool] = {}
    for sample, hit in zip(samples, flagged, strict=True):
        scans[sample.group] = scans.get(sample.group, False) or bool(hit)
    slices_flagged, scans_flagged = int(flagged.sum()), sum(scans.values())
    return {
        "collection": "bhsd_seg (every slice shows haemorrhage; not used by the classifier)",
        "threshold": round(float(bundle.threshold), 6),
        "slices": len(samples),
        "slices_flagged": slices_flagged,
        "sensitivity": round(slices_flagged / len(samples), 4),
        "sensitivity_ci95": wilson_interval(slices_flagged, len(samples)),
        "scans": len(scans),
        "scans_flagged": scans_flagged,
        "scan_sensitivity": round(scans_flagged / len(scans), 4),
        "scan_sensitivity_ci95": wilson_interval(scans_flagged, len(scans)),
    }


def training_stages(card: dict[str, Any], output: Path | None = None) -> list[dict[str, Any]] | None:
    """The commands and costs of every training stage, when the model continued earlier weights.

    The chain is followed back through each earlier bundle's card (its recorded stages when it has
    them), so the first command starts from random weights and each later one from the one before;
    an earlier stage's command names the folder it wrote (``output``), where the next one reads it.
    """
    init_from = card["training"]["config"].get("init_from")
    if not init_from:
        return None
    earlier_dir = Path(init_from).parent
    earlier_card_path = earlier_dir / "model_card.json"
    if not earlier_card_path.is_file():
        return None
    earlier = json.loads(earlier_card_path.read_text(encoding="utf-8"))
    earlier_stages = earlier["training"].get("stages") or training_stages(earlier, earlier_dir)
    if earlier_stages is None:
        earlier_stages = [_stage(earlier, earlier_dir)]
    return [*earlier_stages, _stage(card, output)]


def _stage(card: dict[str, Any], output: Path | None) -> dict[str, Any]:
    command = card["reproduce"] if output is None else f"{card['reproduce']} --output {output}"
    return {
        "command": command,
        "epochs_run": card["training"]["epochs_run"],
        "seconds": card["training"]["seconds"],
    }


def bundle_size_mib(bundle_dir: Path) -> float:
    return sum(path.stat().st_size for path in bundle_dir.rglob("*") if path.is_file()) / 1024 / 1024


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(prog="python -m ml.export", description="Finish and check a model bundle.")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--saved-model", type=Path, help="also export a TensorFlow SavedModel here")
    args = parser.parse_args(argv)

    with data_errors(parser):
        bundle = load_bundle(args.model_dir)
        samples = split_samples(bundle, args.data_dir, "test")
        probabilities = split_probabilities(bundle, samples, args.cache_dir)
        plots = write_plots(bundle.path, samples, probabilities, bundle.threshold)
        problems = check_card_metrics(bundle.card, samples, probabilities)
        validation = split_samples(bundle, args.data_dir, "validation")
        study = choose_study_aggregation(validation, split_probabilities(bundle, validation, args.cache_dir))
        study_test = study_test_metrics(samples, probabilities, study["method"], study["threshold"])
        robustness = robustness_report(bundle.model, samples, bundle.preprocess_config, bundle.threshold)
        external = external_sensitivity(bundle, args.data_dir, args.cache_dir)
    size = bundle_size_mib(bundle.path)
    if args.saved_model is not None:
        bundle.model.export(str(args.saved_model))
    report = {
        "plots": plots,
        "metric_mismatches": problems,
        "bundle_mib": round(size, 2),
        "study_aggregation": study,
        "study_test_ct_ich": study_test,
        "robustness": robustness,
        "external_bhsd_seg": external,
    }
    print(json.dumps(report, indent=1))
    if not problems:
        card = dict(bundle.card)
        card["study_aggregation"] = study["method"]
        card["study_threshold"] = study["threshold"]
        card["study_selection"] = study
        card["metrics"]["test_study_ct_ich"] = study_test
        if external is not None:
            card["metrics"]["external_bhsd_seg"] = external
        card["robustness"] = robustness
        card["export"] = {"command": f"python -m ml.export --model-dir {args.model_dir}", "plots": plots}
        stages = training_stages(card)
        if stages:
            card["training"]["stages"] = stages
        (bundle.path / "model_card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    if problems or size > MAX_BUNDLE_MIB:
        logger.error("The bundle does not pass its checks.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
