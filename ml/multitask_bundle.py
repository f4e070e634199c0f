"""Command line: turn a multitask training run into a model bundle the service serves.

Everything the card decides is chosen on the validation split: the slice threshold (the highest
with sensitivity >= 0.95 on the reliable validation slices of every collection), the study
aggregation and threshold (patient sensitivity >= 0.95 on the CT-ICH and phe_sich validation
series, then the most CT-ICH normal patients cleared), and the outline post-processing (best
``bhsd_seg`` Dice with >= 0.93 of normal CT-ICH slices clear). The test split is then measured
once and written into the card::

    python -m ml.multitask_bundle --run-dir artifacts/experiments/multitask-stage2 \\
        --output model_store/ich-multitask/0.1.0
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from ml.cli import ArgumentParser, data_errors
from ml.data.augmentation import AugmentationConfig
from ml.data.datasets import Sample, default_data_dir, read_datasets
from ml.data.segmentation import SUBTYPE_COLOURS, SUBTYPES
from ml.data.splits import load_manifest, select
from ml.errors import DataError, MissingDataFile
from ml.evaluation.metrics import binary_metrics, choose_threshold, json_number, summarize, wilson_interval
from ml.evaluation.robustness import PERTURBATION_TITLES, robustness_report
from ml.evaluation.segmentation import pointing_game_hit
from ml.evaluation.study import compare_aggregations
from ml.evaluation.study_outline import choose_outline_rule, grid_blood_px, series_sums, study_flags
from ml.explain.gradcam import GradCam
from ml.model_io import save_bundle
from ml.models.multitask import GRADCAM_LAYER
from ml.multitask import FLAG_BOX, MultitaskConfig, Outputs, Part, Predictor, prepare_parts
from ml.seg_training import choose_postprocessing, clear_rate, pooled_blood_dice
from ml.training import measure_latency

logger = logging.getLogger(__name__)

SLICE_SENSITIVITY = 0.95
STUDY_SENSITIVITY = 0.95
# The outline criterion joins the study rule only if it clears this many more CT-ICH normal
# validation patients than the probability alone, at the same patient sensitivity.
OUTLINE_RULE_GAIN = 2
OUTLINE_AGGREGATION = "top3_mean"
CLASSIFIED = ("ct_ich", "head_ct", "phe_sich")
SERIES = ("ct_ich", "phe_sich")

LIMITATIONS = [
    "Trained from scratch on public slices of a few hundred patients from a few hospitals "
    "(CT-ICH, head_ct figures, PHE-SICH-CT-IDS, BHSD/MBH-Seg samples): other scanners and "
    "populations may give other results.",
    "PHE-SICH-CT-IDS is licensed for non-commercial use only; this model, trained on it, inherits "
    "that restriction.",
    "Every PHE-SICH-CT-IDS patient has a spontaneous intraparenchymal haemorrhage: that collection "
    "teaches no patient-level specificity, and its outlines inside each box are derived (the hyperdense "
    "region), not drawn.",
    "Judges slices one at a time; the study decision combines them with the rule in this card.",
]


def run_config(run_dir: Path) -> MultitaskConfig:
    """The training configuration written beside a run's (or a bundle's) model.

    Raises:
        MissingDataFile: the folder holds no ``train_config.json``.
        DataError: it is not a JSON object.
    """
    path = Path(run_dir) / "train_config.json"
    if not path.is_file():
        raise MissingDataFile(
            f"{run_dir} holds no train_config.json: name a training run or a multitask bundle."
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON: {error}.") from error
    if not isinstance(values, dict):
        raise DataError(f"{path} is not a JSON object.")
    known = {field.name for field in fields(MultitaskConfig)}
    values = {key: value for key, value in values.items() if key in known}
    values["collections"] = tuple(values.get("collections", MultitaskConfig().collections))
    return MultitaskConfig(**values)


def validation_command(
    prog: str, description: str, argv: list[str] | None
) -> tuple[keras.Model, dict[str, Part]]:
    """The command line of a tool that measures a multitask bundle (or run) on the validation
    split: its ``--model-dir``, ``--data-dir`` and ``--cache-dir``, read into the model and the
    prepared validation parts; data errors end the command with one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model-dir", type=Path, required=True, help="a multitask bundle or run folder")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    args = parser.parse_args(argv)
    with data_errors(parser):
        config = run_config(args.model_dir)
        parts = prepare_parts(args.data_dir, config, args.cache_dir)["validation"]
        model = keras.models.load_model(args.model_dir / "model.keras", compile=False)
    return model, parts


def _outputs(predictor: Predictor, parts: dict[str, Part]) -> dict[str, Outputs]:
    """One pass over every part; class maps kept where the outlines are measured."""
    return {name: predictor(part, masks=name in ("bhsd_seg", "ct_ich")) for name, part in parts.items()}


def _pooled_reliable(parts: dict[str, Part], outputs: dict[str, Outputs]) -> tuple[np.ndarray, np.ndarray]:
    labels, probabilities = [], []
    for name in CLASSIFIED:
        keep = parts[name].label_weights > 0
        labels.append(parts[name].labels[keep])
        probabilities.append(outputs[name].probability[keep])
    return np.concatenate(labels), np.concatenate(probabilities)


def series_scores(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    groups: Sequence[str],
    datasets: Sequence[str],
) -> dict[str, Any]:
    """Patient labels and study probabilities under every aggregation, and which collection each
    patient comes from (patients in sorted order, as ``compare_aggregations`` gives them)."""
    source = dict(zip(groups, datasets, strict=True))
    return {
        "by_method": compare_aggregations(labels, probabilities, groups),
        "sources": np.array([source[name] for name in sorted(source)]),
    }


def _series(
    parts: dict[str, Part], outputs: dict[str, Outputs], outline: tuple[float, int] | None = None
) -> dict[str, Any]:
    """Every slice of a series counts, the uncertain ones too: the patient's label is known. With
    ``outline`` (blood threshold, smallest component), each patient's outlined pixels too."""
    groups = [group for name in SERIES for group in parts[name].groups]
    series = series_scores(
        np.concatenate([parts[name].labels for name in SERIES]),
        np.concatenate([outputs[name].probability for name in SERIES]),
        groups,
        [name for name in SERIES for _ in parts[name].groups],
    )
    if outline is not None:
        pixels = np.concatenate([grid_blood_px(outputs[name].blood, *outline) for name in SERIES])
        series["outline_px"] = series_sums(pixels, groups)
    return series


def choose_study_rules(series: dict[str, Any], sensitivity: float = STUDY_SENSITIVITY) -> dict[str, Any]:
    """The probability-only rule (:func:`choose_study_rule`), and the rule with the outline
    criterion beside ``OUTLINE_AGGREGATION`` when ``series`` holds outlined pixels; the second is
    ``chosen`` only if it clears ``OUTLINE_RULE_GAIN`` more CT-ICH normal patients."""
    rules = choose_study_rule(series, sensitivity)
    if "outline_px" not in series:
        return rules
    values = series["by_method"][OUTLINE_AGGREGATION]
    normal = (values["labels"] == 0) & (series["sources"] == "ct_ich")
    with_outline = choose_outline_rule(
        values["labels"], values["probabilities"], series["outline_px"], normal, sensitivity
    )
    rules["outline_candidate"] = with_outline
    if with_outline is not None and (
        with_outline["ct_ich_normal_cleared"] >= rules["chosen"]["ct_ich_normal_cleared"] + OUTLINE_RULE_GAIN
    ):
        rules["chosen"] = {"aggregation": OUTLINE_AGGREGATION, **with_outline}
    return rules


def choose_study_rule(series: dict[str, Any], sensitivity: float = STUDY_SENSITIVITY) -> dict[str, Any]:
    """For each aggregation the highest threshold keeping ``sensitivity`` of the haemorrhage
    patients; the chosen one clears the most CT-ICH normal patients (then the higher patient AUC)."""
    table = []
    for method, values in series["by_method"].items():
        labels, scores = values["labels"], values["probabilities"]
        threshold = choose_threshold(labels, scores, sensitivity)
        normal = (labels == 0) & (series["sources"] == "ct_ich")
        table.append(
            {
                "aggregation": method,
                "threshold": round(float(threshold), 6),
                "sensitivity": json_number(float(np.mean(scores[labels == 1] >= threshold))),
                "ct_ich_normal_cleared": int(np.sum(scores[normal] < threshold)),
                "ct_ich_normal_patients": int(normal.sum()),
                "patient_auc": json_number(binary_metrics(labels, scores, threshold)["auc"]),
            }
        )
    best = max(table, key=lambda row: (row["ct_ich_normal_cleared"], row["patient_auc"] or 0.0))
    return {"chosen": best, "candidates": table}


def study_metrics(
    series: dict[str, Any], aggregation: str, threshold: float, outline_px: int | None = None
) -> dict[str, Any]:
    values = series["by_method"][aggregation]
    labels, scores = values["labels"], values["probabilities"]
    decided = study_flags(scores, series.get("outline_px", np.zeros(len(labels))), threshold, outline_px)
    report: dict[str, Any] = {}
    for name in ("all", *SERIES):
        chosen = np.ones(len(labels), bool) if name == "all" else series["sources"] == name
        positives = int(np.sum(labels[chosen] == 1))
        negatives = int(np.sum(labels[chosen] == 0))
        flagged = int(np.sum(decided[chosen & (labels == 1)]))
        cleared = int(np.sum(~decided[chosen & (labels == 0)]))
        report[name] = {
            "patients": int(chosen.sum()),
            "sensitivity": {
                "value": json_number(flagged / positives) if positives else None,
                "ci95": wilson_interval(flagged, positives),
                "count": f"{flagged}/{positives}",
            },
            "specificity": {
                "value": json_number(cleared / negatives) if negatives else None,
                "ci95": wilson_interval(cleared, negatives),
                "count": f"{cleared}/{negatives}",
            },
        }
    return report


def held_out_metrics(
    predictor: Predictor,
    test: dict[str, Part],
    threshold: float,
    aggregation: str,
    study_threshold: float,
    blood_threshold: float,
    min_px: int,
    study_outline_px: int | None = None,
) -> dict[str, Any]:
    """The card's test figures: slices per collection at ``threshold``, studies under the chosen
    rule, and outlines after the chosen post-processing."""
    outputs = _outputs(predictor, test)
    slices: dict[str, Any] = {}
    for collection in CLASSIFIED:
        part = test[collection]
        keep = part.label_weights > 0
        slices[collection] = summarize(
            part.labels[keep],
            outputs[collection].probability[keep],
            threshold,
            [g for g, k in zip(part.groups, keep, strict=True) if k],
        )
    normal = test["ct_ich"].labels == 0
    outlines = {
        "bhsd_seg_any_blood_dice": json_number(
            pooled_blood_dice(outputs["bhsd_seg"].maps, test["bhsd_seg"].masks, blood_threshold, min_px)
        ),
        "bhsd_seg_slices": len(test["bhsd_seg"]),
        "normal_ct_ich_slices_clear": json_number(
            clear_rate(outputs["ct_ich"].maps[normal], blood_threshold, min_px)
        ),
        "normal_ct_ich_slices": int(normal.sum()),
    }
    studies = study_metrics(
        _series(test, outputs, (blood_threshold, min_px)), aggregation, study_threshold, study_outline_px
    )
    pointing = pointing_game(predictor.model, test)
    return {"slices": slices, "studies": studies, "outlines": outlines, "pointing_game": pointing}


def pointing_game(
    model: keras.Model, parts: dict[str, Part], layer: str = GRADCAM_LAYER, weighting: str = "channel_mean"
) -> dict[str, Any]:
    """Does the Grad-CAM heat map of the slice probability (on ``layer``) peak inside the labelled
    bleed: the blood masks of bhsd_seg, and the haematoma boxes of phe_sich? The haemorrhage class
    is explained whatever the decision, so no threshold enters."""
    gradcam = GradCam(model, layer, weighting=weighting)
    truths = {
        "bhsd_seg": parts["bhsd_seg"].masks > 0,
        "phe_sich": (parts["phe_sich"].flags & FLAG_BOX) > 0,
    }
    report: dict[str, Any] = {}
    for name, truth in truths.items():
        chosen = np.flatnonzero(truth.any(axis=(1, 2)))
        hits = []
        for start in range(0, len(chosen), 32):
            batch = chosen[start : start + 32]
            images = parts[name].images[batch, :, :, np.newaxis].astype(np.float32) / 255.0
            _, heatmaps = gradcam(images, positive=True)
            size = images.shape[1]
            for heatmap, index in zip(heatmaps, batch, strict=True):
                grid = cv2.resize(heatmap.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
                hits.append(pointing_game_hit(grid, truth[index]))
        report[name] = {
            "slices": len(hits),
            "hit_rate": json_number(float(np.mean(hits))) if hits else None,
            "hit_rate_ci95": wilson_interval(int(np.sum(hits)), len(hits)),
        }
    return report


POINTING_TARGET = 0.80
ROBUSTNESS_MEAN_CHANGE = 0.05


def measured_limitations(measured: dict[str, Any], robustness: dict[str, Any]) -> list[str]:
    """Warnings the test figures call for: a heat map that seldom peaks in the bleed, and a
    change of the image that moves the answer."""
    lines = []
    for collection, figures in measured.get("pointing_game", {}).items():
        rate = figures.get("hit_rate")
        if rate is not None and rate < POINTING_TARGET:
            lines.append(
                f"The Grad-CAM heat map peaks inside the labelled bleed on only {rate:.0%} of held-out "
                f"{collection} slices ({figures['slices']} slices): it shows what drove the score, often "
                "not the bleed. Use the outline, not the heat map, to judge where blood is."
            )
    for name, figures in robustness.items():
        if isinstance(figures, dict) and figures.get("mean_abs_change", 0.0) >= ROBUSTNESS_MEAN_CHANGE:
            title = PERTURBATION_TITLES.get(name, name)
            lines.append(
                f"{title} moves the probability by {figures['mean_abs_change']:.2f} on average and changes "
                f"{figures['flip_rate']:.0%} of decisions: show slices in the usual orientation."
            )
    return lines


def classifier_test_samples(config: MultitaskConfig, data_dir: Path) -> list[Sample]:
    """The CT-ICH and head_ct test images of the shared patient split, as files (the robustness
    check perturbs the images before preprocessing)."""
    manifest = load_manifest(Path(config.split_manifest))
    return select(
        read_datasets(data_dir, [name for name in ("head_ct", "ct_ich") if name in config.collections]),
        manifest["test"],
    )


def make_bundle(
    run_dir: Path, output: Path, data_dir: Path, name: str, version: str, cache_dir: Path | None
) -> dict[str, Any]:
    config = run_config(run_dir)
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    parts = prepare_parts(data_dir, config, cache_dir)
    validation, test = parts["validation"], parts["test"]
    predictor = Predictor(model)
    val_outputs = _outputs(predictor, validation)

    labels, probabilities = _pooled_reliable(validation, val_outputs)
    threshold = choose_threshold(labels, probabilities, SLICE_SENSITIVITY)
    normal_val = validation["ct_ich"].labels == 0
    post = choose_postprocessing(
        val_outputs["bhsd_seg"].maps, validation["bhsd_seg"].masks, val_outputs["ct_ich"].maps[normal_val]
    )
    blood_threshold = float(post["chosen"]["blood_threshold"])
    min_px = int(post["chosen"]["min_component_px"])
    study_rule = choose_study_rules(_series(validation, val_outputs, (blood_threshold, min_px)))
    chosen = study_rule["chosen"]
    outline_px = chosen.get("outline_px")

    # The test split, once.
    measured = held_out_metrics(
        predictor,
        test,
        threshold,
        chosen["aggregation"],
        chosen["threshold"],
        blood_threshold,
        min_px,
        outline_px,
    )
    robustness = robustness_report(
        model,
        classifier_test_samples(config, data_dir),
        config.preprocess_config,
        threshold,
    )
    size = config.image_size
    card: dict[str, Any] = {
        "kind": "multitask",
        "name": name,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": "Intracranial haemorrhage on one axial brain CT slice: probability, five subtypes, and an outline of blood by subtype, from one network.",
        "parameters": int(model.count_params()),
        "input_shape": [size, size, 1],
        "threshold": round(float(threshold), 6),
        "threshold_rule": f"highest threshold with sensitivity >= {SLICE_SENSITIVITY} on the reliable validation slices of ct_ich, head_ct and phe_sich",
        "study_aggregation": chosen["aggregation"],
        "study_threshold": chosen["threshold"],
        "study_outline_px": outline_px,
        "study_selection": {
            "rule": f"per aggregation the highest threshold with patient sensitivity >= {STUDY_SENSITIVITY} on the validation CT-ICH and phe_sich series; chosen: the most CT-ICH normal patients cleared, then patient AUC",
            "outline_rule": f"{OUTLINE_AGGREGATION} or the outlined pixels summed over the series (model grid, after post-processing); thresholds at spaced midpoints between validation patients, patient sensitivity >= {STUDY_SENSITIVITY}, the most CT-ICH normal patients cleared, then the lowest thresholds; chosen only if it clears {OUTLINE_RULE_GAIN} more than the probability alone",
            **study_rule,
        },
        "gradcam_layer": GRADCAM_LAYER,
        "preprocessing": config.preprocess_config.to_dict(),
        "augmentation": {**AugmentationConfig().to_dict(), "quarter_turns": config.rotate_90},
        "blood_threshold": blood_threshold,
        "min_component_px": min_px,
        "postprocessing_selection": post,
        "subtypes": list(SUBTYPES),
        "subtype_colours": {
            key: "#{:02x}{:02x}{:02x}".format(*colour) for key, colour in SUBTYPE_COLOURS.items()
        },
        "training": {
            "datasets": list(config.collections),
            "split_manifest": "split_manifest.json",
            "counts": {split: {n: len(p) for n, p in members.items()} for split, members in parts.items()},
            "config": json.loads((run_dir / "train_config.json").read_text(encoding="utf-8")),
            "licence": "PHE-SICH-CT-IDS: non-commercial use only",
        },
        "metrics": {"test": measured},
        "robustness": robustness,
        "cpu_latency_ms_per_slice": round(measure_latency(model, size), 1),
        "intended_use": "Research and decision support only: flags axial brain CT slices and series that may show intracranial haemorrhage for a qualified reader to review. Not for clinical use; not a diagnosis.",
        "limitations": [*LIMITATIONS, *measured_limitations(measured, robustness)],
        "reproduce": f"make train (the classifier it starts from), make train-multitask (the stages in training.config), then python -m ml.multitask_bundle --run-dir {run_dir} --output {output} --name {name} --version {version}",
    }
    save_bundle(model, card, output)
    shutil.copy(run_dir / "split_manifest.json", Path(output) / "split_manifest.json")
    for extra in ("training_log.csv", "train_config.json"):
        if (run_dir / extra).is_file():
            shutil.copy(run_dir / extra, Path(output) / extra)
    return card


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(prog="python -m ml.multitask_bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--name", default="ich-multitask")
    parser.add_argument("--version", default="0.1.0")
    args = parser.parse_args(argv)
    with data_errors(parser):
        card = make_bundle(args.run_dir, args.output, args.data_dir, args.name, args.version, args.cache_dir)
    print(json.dumps(card["metrics"], indent=1))


if __name__ == "__main__":
    main()
