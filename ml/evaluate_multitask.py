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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.cli import ArgumentParser, data_errors
from ml.data.datasets import default_data_dir
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.evaluation.metrics import json_number, summarize
from ml.evaluation.segmentation import overlap_counts
from ml.model_io import load_bundle
from ml.multitask_bundle import SERIES, choose_study_rule, series_scores
from ml.multitask_data import READERS, _Slice
from ml.segmenter import class_map_from_probabilities, class_map_to_original, load_segmenter

logger = logging.getLogger(__name__)

CLASSIFIED = ("ct_ich", "head_ct", "phe_sich")


def split_slices(data_dir: Path, manifest_path: Path, split: str) -> dict[str, list[_Slice]]:
    """Every collection's slices whose patient (or volume) the manifest puts in ``split``."""
    manifest = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    patients = set(manifest[split]["patients"])
    return {name: [s for s in reader(data_dir) if s.group in patients] for name, reader in READERS.items()}


class _Model:
    """A compiled forward pass of one model, on its own preprocessing, over decoded images."""

    def __init__(self, model: keras.Model, config: PreprocessConfig, key: str | None) -> None:
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self.config = config
        self.key = key

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(images), 32):
            batch = np.stack([preprocess(image, self.config).image for image in images[start : start + 32]])
            outputs = self._call(tf.convert_to_tensor(batch, tf.float32))
            out.append(np.asarray(outputs[self.key] if self.key else outputs).ravel())
        return np.concatenate(out) if out else np.zeros(0)


def auc_with_interval(labels: np.ndarray, probabilities: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """Slice AUC with its patient-bootstrap 95% interval (``ml.evaluation.metrics.summarize``)."""
    summary = summarize(labels, probabilities, 0.5, groups, num_resamples=500)
    return {**summary["metrics"]["auc"], "n": summary["n"], "positives": summary["n_positive"]}


def pooled_dice(class_maps: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> float | None:
    counts = np.zeros(3)
    for predicted, truth in zip(class_maps, truths, strict=True):
        counts += overlap_counts(predicted > 0, truth > 0)
    return json_number(2 * counts[0] / (counts[1] + counts[2])) if counts[1] + counts[2] else None


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
    models = {"multitask": _Model(multitask, config, "probability")}
    if classifier_dir is not None:
        bundle = load_bundle(classifier_dir)
        models[f"{bundle.name} {bundle.version}"] = _Model(bundle.model, bundle.preprocess_config, None)
    report: dict[str, Any] = {"slices": {}, "studies": {}, "outlines": {}}
    series: dict[str, list[np.ndarray]] = {name: [] for name in models}
    for dataset in CLASSIFIED:
        slices = parts[dataset]
        images = [item.load() for item in slices]
        labels = np.array([s.label for s in slices])
        reliable = np.array([s.label_weight > 0 for s in slices])
        groups = [s.group for s in slices]
        entry: dict[str, Any] = {}
        for name, model in models.items():
            probabilities = model.probabilities(images)
            entry[name] = auc_with_interval(
                labels[reliable],
                probabilities[reliable],
                [g for g, r in zip(groups, reliable, strict=True) if r],
            )
            if dataset in SERIES:
                series[name].append(probabilities)
        report["slices"][dataset] = entry
        logger.info("%s: %s", dataset, json.dumps(entry))
    report["slices"]["mean_source_auc"] = {
        name: json_number(float(np.mean([report["slices"][d][name]["value"] for d in CLASSIFIED])))
        for name in models
    }
    # A series holds every slice, the uncertain ones too; the patient's label is known.
    series_slices = [item for dataset in SERIES for item in parts[dataset]]
    for name, chunks in series.items():
        report["studies"][name] = choose_study_rule(
            series_scores(
                [item.label for item in series_slices],
                np.concatenate(chunks),
                [item.group for item in series_slices],
                [dataset for dataset in SERIES for _ in parts[dataset]],
            ),
            study_sensitivity,
        )

    bhsd = parts["bhsd_seg"]
    images = [item.load() for item in bhsd]
    prepared = [preprocess(image, config) for image in images]
    truths = [item.load_mask(image.shape[:2]) for item, image in zip(bhsd, images, strict=True)]  # type: ignore[misc]
    masks = multitask(np.stack([r.image for r in prepared]), training=False)["mask"].numpy()
    maps = [
        class_map_to_original(class_map_from_probabilities(mask, 0.5, 0), r.geometry)
        for mask, r in zip(masks, prepared, strict=True)
    ]
    report["outlines"]["multitask (blood >= 0.5)"] = {
        "dice_any_blood": pooled_dice(maps, truths),
        "slices": len(bhsd),
    }
    if segmenter_dir is not None:
        segmenter = load_segmenter(segmenter_dir)
        prepared = [preprocess(image, segmenter.config) for image in images]
        seg_masks, seg_subtypes = segmenter.probabilities(np.stack([r.image for r in prepared]))
        maps = [
            segmenter.result(mask, subtypes, r.geometry).class_map
            for mask, subtypes, r in zip(seg_masks, seg_subtypes, prepared, strict=True)
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
