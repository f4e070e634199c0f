"""Command line: the multitask network beside the served classifier and segmentation model, on
the same patients of one split.

Example::

    python -m ml.evaluate_multitask --model-dir artifacts/experiments/multitask-stage1 --split validation

Per collection: slice AUC of each model (reliable slices only: phe_sich's near-haemorrhage
slices are left out); on ``bhsd_seg``: pooled any-blood Dice of each model's outlines on the
original image grid; per patient (CT-ICH and phe_sich series): every study aggregation's AUC and
the highest study threshold that keeps the sensitivity asked for, with the specificity it gives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.cli import ArgumentParser, data_errors
from ml.data.datasets import default_data_dir
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.evaluation.metrics import bootstrap_intervals, json_number
from ml.evaluation.segmentation import overlap_counts
from ml.evaluation.study import compare_aggregations
from ml.model_io import load_bundle
from ml.multitask import _bhsd_slices, _ct_ich_slices, _head_ct_slices, _phe_sich_slices, _Slice
from ml.segmenter import class_map_from_probabilities, class_map_to_original, load_segmenter

logger = logging.getLogger(__name__)

READERS: dict[str, Callable[[Path], list[_Slice]]] = {
    "ct_ich": _ct_ich_slices,
    "head_ct": _head_ct_slices,
    "phe_sich": _phe_sich_slices,
    "bhsd_seg": _bhsd_slices,
}


def split_slices(data_dir: Path, manifest_path: Path, split: str) -> dict[str, list[_Slice]]:
    """Every collection's slices whose patient (or volume) the manifest puts in ``split``."""
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    patients = set(manifest[split]["patients"])
    return {name: [s for s in reader(data_dir) if s.group in patients] for name, reader in READERS.items()}


class _Forward:
    """A compiled forward pass of a Keras model over preprocessed batches."""

    def __init__(self, model: keras.Model) -> None:
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, batch: np.ndarray) -> Any:
        return self._call(tf.convert_to_tensor(batch, tf.float32))


def _preprocessed(slices: Sequence[_Slice], config: PreprocessConfig) -> tuple[np.ndarray, list[Any]]:
    results = [preprocess(item.load(), config) for item in slices]
    return np.stack([r.image for r in results]), [r.geometry for r in results]


def slice_probabilities(
    forward: _Forward, slices: Sequence[_Slice], config: PreprocessConfig, key: str | None
) -> np.ndarray:
    out = []
    for start in range(0, len(slices), 32):
        batch, _ = _preprocessed(slices[start : start + 32], config)
        outputs = forward(batch)
        values = outputs[key] if key else outputs
        out.append(np.asarray(values).ravel())
    return np.concatenate(out) if out else np.zeros(0)


def auc_with_interval(labels: np.ndarray, probabilities: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return {"value": None, "ci95": [None, None], "n": len(labels)}
    value = float(roc_auc_score(labels, probabilities))
    intervals = bootstrap_intervals(labels, probabilities, 0.5, groups, num_resamples=500, seed=0)
    low, high = intervals["auc"]
    return {
        "value": json_number(value),
        "ci95": [json_number(low), json_number(high)],
        "n": len(labels),
        "positives": int(labels.sum()),
    }


def pooled_dice(class_maps: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float | None:
    counts = np.zeros(3)
    for predicted, truth in zip(class_maps, truths, strict=True):
        counts += overlap_counts(predicted > 0, truth > 0)
    return json_number(2 * counts[0] / (counts[1] + counts[2])) if counts[1] + counts[2] else None


def study_figures(
    labels: np.ndarray,
    probabilities: np.ndarray,
    groups: Sequence[str],
    datasets: Sequence[str],
    sensitivity: float,
) -> dict[str, Any]:
    """Each aggregation's patient AUC, and the highest threshold keeping ``sensitivity`` of the
    haemorrhage patients, with the CT-ICH normal patients it clears."""
    from sklearn.metrics import roc_auc_score

    report: dict[str, Any] = {}
    dataset_of = dict(zip(groups, datasets, strict=True))
    for method, values in compare_aggregations(labels, probabilities, groups).items():
        patient_labels, scores = values["labels"], values["probabilities"]
        names = sorted(set(groups))
        positives = np.sort(scores[patient_labels == 1])
        # Highest threshold that flags at least the asked share of positive patients.
        keep = int(np.ceil(sensitivity * len(positives)))
        threshold = float(positives[len(positives) - keep]) if keep else 1.0
        normal = [
            i for i, name in enumerate(names) if patient_labels[i] == 0 and dataset_of[name] == "ct_ich"
        ]
        cleared = int(sum(scores[i] < threshold for i in normal))
        flagged = int(sum(scores[i] >= threshold for i, label in enumerate(patient_labels) if label == 1))
        report[method] = {
            "patient_auc": json_number(float(roc_auc_score(patient_labels, scores)))
            if 0 < patient_labels.sum() < len(patient_labels)
            else None,
            "threshold": round(threshold, 6),
            "haemorrhage_patients_flagged": f"{flagged}/{int(patient_labels.sum())}",
            "ct_ich_normal_patients_cleared": f"{cleared}/{len(normal)}",
        }
    return report


def evaluate(
    parts: dict[str, list[_Slice]],
    multitask_dir: Path,
    classifier_dir: Path | None,
    segmenter_dir: Path | None,
    study_sensitivity: float,
) -> dict[str, Any]:
    card = json.loads((multitask_dir / "train_config.json").read_text(encoding="utf-8"))
    config = PreprocessConfig(image_size=int(card["image_size"]))
    multitask = keras.models.load_model(multitask_dir / "model.keras", compile=False)
    models: dict[str, tuple[_Forward, PreprocessConfig, str | None]] = {
        "multitask": (_Forward(multitask), config, "probability")
    }
    if classifier_dir is not None:
        bundle = load_bundle(classifier_dir)
        models[f"{bundle.name} {bundle.version}"] = (_Forward(bundle.model), bundle.preprocess_config, None)
    report: dict[str, Any] = {"slices": {}, "studies": {}, "outlines": {}}
    study_inputs: dict[str, dict[str, list[Any]]] = {
        name: {"p": [], "l": [], "g": [], "d": []} for name in models
    }
    for dataset in ("ct_ich", "head_ct", "phe_sich"):
        slices = parts[dataset]
        labels = np.array([s.label for s in slices])
        reliable = np.array([s.label_weight > 0 for s in slices])
        groups = [s.group for s in slices]
        entry: dict[str, Any] = {}
        for name, (forward, preprocess_config, key) in models.items():
            probabilities = slice_probabilities(forward, slices, preprocess_config, key)
            entry[name] = auc_with_interval(
                labels[reliable],
                probabilities[reliable],
                [g for g, r in zip(groups, reliable, strict=True) if r],
            )
            if dataset in ("ct_ich", "phe_sich"):
                # A series holds every slice, the uncertain ones too; the patient label is known.
                study_inputs[name]["p"].extend(probabilities)
                study_inputs[name]["l"].extend(labels)
                study_inputs[name]["g"].extend(groups)
                study_inputs[name]["d"].extend([dataset] * len(slices))
        report["slices"][dataset] = entry
        logger.info("%s: %s", dataset, json.dumps(entry))
    report["slices"]["mean_source_auc"] = {
        name: json_number(
            float(np.mean([report["slices"][d][name]["value"] for d in ("ct_ich", "head_ct", "phe_sich")]))
        )
        for name in models
    }
    for name, values in study_inputs.items():
        report["studies"][name] = study_figures(
            np.array(values["l"]), np.array(values["p"]), values["g"], values["d"], study_sensitivity
        )

    bhsd = parts["bhsd_seg"]
    truths = [item.load_mask(preprocess(item.load(), config).geometry.original_shape) for item in bhsd]  # type: ignore[misc]
    batch, geometries = _preprocessed(bhsd, config)
    masks = multitask(batch, training=False)["mask"].numpy()
    maps = [
        class_map_to_original(class_map_from_probabilities(mask, 0.5, 0), geometry)
        for mask, geometry in zip(masks, geometries, strict=True)
    ]
    report["outlines"]["multitask (blood >= 0.5)"] = {
        "dice_any_blood": pooled_dice(maps, truths),
        "slices": len(bhsd),
    }
    if segmenter_dir is not None:
        segmenter = load_segmenter(segmenter_dir)
        batch, geometries = _preprocessed(bhsd, segmenter.config)
        seg_masks, seg_subtypes = segmenter.probabilities(batch)
        maps = [
            segmenter.result(mask, subtypes, geometry).class_map
            for mask, subtypes, geometry in zip(seg_masks, seg_subtypes, geometries, strict=True)
        ]
        report["outlines"][f"{segmenter.name} {segmenter.version}"] = {
            "dice_any_blood": pooled_dice(maps, truths),
            "slices": len(bhsd),
        }
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(prog="python -m ml.evaluate_multitask", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, required=True, help="folder with model.keras and train_config.json"
    )
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--classifier-dir", type=Path, default=Path("model_store/ich-compact/1.1.0"))
    parser.add_argument("--segmenter-dir", type=Path, default=Path("model_store/ich-unet/1.1.0"))
    parser.add_argument("--study-sensitivity", type=float, default=0.95)
    parser.add_argument(
        "--output", type=Path, help="JSON file for the report (default: MODEL_DIR/evaluation_SPLIT.json)"
    )
    args = parser.parse_args(argv)
    with data_errors(parser):
        parts = split_slices(args.data_dir, args.model_dir / "split_manifest.json", args.split)
        report = evaluate(
            parts, args.model_dir, args.classifier_dir, args.segmenter_dir, args.study_sensitivity
        )
    output = args.output or args.model_dir / f"evaluation_{args.split}.json"
    output.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
