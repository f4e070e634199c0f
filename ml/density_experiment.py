"""Command line: does a density channel (Hounsfield units above blood) help the classifier?

Continues a trained one-channel classifier (``--init-from``, by default ich-compact 1.1.0) as a
two-channel network, the second channel being :mod:`ml.data.density`'s map: its first
convolution gains a second input whose weights start at zero, so before the first step the
network answers exactly as the one it came from. It learns on the same patients (the bundle's
``split_manifest.json``) with CT-ICH's bone-window images as the density source, the channel
blanked for ``head_ct`` (Hounsfield units unknown) and, with ``--density-dropout``, for a share
of the CT-ICH slices, so the network also reads images without it. Then, on the validation split
only, it reports the slice AUC per collection with and without the channel beside the starting
network, and how many normal CT-ICH validation patients a study threshold that flags every
bleeding one clears::

    python -m ml.density_experiment --output artifacts/experiments/density-a

The test split is not read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from ml.callbacks import TimeBudget
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.datasets import Sample, default_data_dir, load_image, read_datasets
from ml.data.density import density_from_hounsfield, hounsfield_from_bone_window, preprocess_with_density
from ml.data.preprocessing import PreprocessConfig
from ml.data.splits import load_manifest, select
from ml.evaluation.metrics import binary_metrics
from ml.evaluation.study import aggregate
from ml.model_io import predict_probabilities
from ml.models.classifier import build_classifier
from ml.training.data import balanced_sample_weights

logger = logging.getLogger(__name__)

DEFAULT_INIT = Path("model_store/ich-compact/1.1.0")


def bone_path(sample: Sample) -> Path | None:
    """The bone-window twin of a CT-ICH brain-window slice, when it exists."""
    if sample.dataset != "ct_ich" or sample.path.parent.name != "brain":
        return None
    path = sample.path.parent.parent / "bone" / sample.path.name
    return path if path.is_file() else None


def sample_density(sample: Sample) -> np.ndarray | None:
    """The density map of a sample on its own grid, or ``None`` where Hounsfield units are unknown."""
    path = bone_path(sample)
    if path is None:
        return None
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        return None
    return density_from_hounsfield(hounsfield_from_bone_window(gray))


def two_channel_arrays(samples: Sequence[Sample], config: PreprocessConfig, cache_dir: Path) -> np.ndarray:
    """uint8 ``N x S x S x 2``: the preprocessed image and its density (cached on disk)."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(b"density-1")
    for sample in samples:
        digest.update(str(sample.path).encode())
    cache_path = cache_dir / f"density-{digest.hexdigest()[:16]}.npy"
    if cache_path.is_file():
        return np.load(cache_path)
    size = config.image_size
    arrays = np.zeros((len(samples), size, size, 2), np.uint8)
    for index, sample in enumerate(samples):
        image = load_image(sample.path)
        density = sample_density(sample)
        if density is not None and density.shape != image.shape[:2]:
            density = None
        arrays[index] = np.round(preprocess_with_density(image, density, config) * 255.0).astype(np.uint8)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache_path, arrays)
    return arrays


def inflate(source: keras.Model, target: keras.Model, position: int = 0) -> None:
    """Copy a one-channel classifier into a twin with more input channels: the source's first
    convolution reads channel ``position``, and the other channels' weights are zero, so the
    twin answers as the source until it learns."""
    for layer in target.layers:
        weights = source.get_layer(layer.name).get_weights() if layer.weights else []
        if layer.name == "stem_conv":
            kernel = weights[0]
            channels = layer.get_weights()[0].shape[2]
            widened = np.zeros((*kernel.shape[:2], channels, kernel.shape[3]), kernel.dtype)
            widened[:, :, position] = kernel[:, :, 0]
            weights = [widened, *weights[1:]]
        if weights:
            layer.set_weights(weights)


def without_density(images: np.ndarray) -> np.ndarray:
    blank = images.copy()
    blank[..., 1] = 0
    return blank


def training_data(
    images: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
    dropout: float,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled, augmented batches: geometry alike on both channels, intensity on the image only,
    and the density blanked on a share ``dropout`` of the images."""
    augmenter = Augmenter(AugmentationConfig(), seed)
    generator = tf.random.Generator.from_seed(seed + 11)

    def augment(x: tf.Tensor, y: tf.Tensor, w: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        x = augmenter.geometric(tf.cast(x, tf.float32) / 255.0)
        image = augmenter.intensity(x[..., :1])
        keep = tf.cast(generator.uniform([tf.shape(x)[0], 1, 1, 1]) >= dropout, tf.float32)
        return tf.concat([image, x[..., 1:] * keep], axis=-1), y, w

    dataset = tf.data.Dataset.from_tensor_slices(
        (images, labels.astype(np.float32), weights.astype(np.float32))
    )
    dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return dataset.map(augment).prefetch(tf.data.AUTOTUNE)


def slice_aucs(probabilities: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> dict[str, float]:
    sources_array = np.array(sources)
    return {
        name: round(
            float(
                binary_metrics(labels[sources_array == name], probabilities[sources_array == name], 0.5)[
                    "auc"
                ]
            ),
            4,
        )
        for name in sorted(set(sources))
    }


def normals_cleared(
    probabilities: np.ndarray, samples: Sequence[Sample], aggregation: str = "top3_mean"
) -> dict[str, Any]:
    """CT-ICH validation patients: at the highest study threshold that flags every bleeding
    patient, how many normal patients are cleared."""
    by_patient: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if sample.dataset == "ct_ich":
            by_patient.setdefault(sample.group, []).append(index)
    scores = {patient: aggregate(probabilities[rows], aggregation) for patient, rows in by_patient.items()}
    bleeding = {p for p, rows in by_patient.items() if any(samples[i].label for i in rows)}
    threshold = min(scores[p] for p in bleeding)
    normal = [p for p in scores if p not in bleeding]
    return {
        "bleeding_patients": len(bleeding),
        "normal_patients": len(normal),
        "normal_cleared": sum(scores[p] < threshold for p in normal),
        "threshold": round(float(threshold), 4),
    }


class ValidationAuc(keras.callbacks.Callback):
    """Adds ``val_ct_ich_auc`` (density present) and ``val_head_ct_auc`` to each epoch's logs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> None:
        super().__init__()
        self.images, self.labels, self.sources = images, labels, list(sources)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        aucs = slice_aucs(predict_probabilities(self.model, self.images), self.labels, self.sources)
        blank = slice_aucs(
            predict_probabilities(self.model, without_density(self.images)), self.labels, self.sources
        )
        if logs is not None:
            logs["val_ct_ich_auc"] = aucs["ct_ich"]
            logs["val_ct_ich_auc_blank"] = blank["ct_ich"]
            logs["val_head_ct_auc"] = aucs["head_ct"]
        logger.info("epoch %d: validation AUC %s, without density %s", epoch + 1, aucs, blank)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--init-from", type=Path, default=DEFAULT_INIT, help="a classifier bundle")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--density-dropout", type=float, default=0.3)
    parser.add_argument("--time-budget-min", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    keras.utils.set_random_seed(args.seed)
    started = time.monotonic()

    card = json.loads((args.init_from / "model_card.json").read_text(encoding="utf-8"))
    config = PreprocessConfig.from_dict(card["preprocessing"])
    train_config = json.loads((args.init_from / "train_config.json").read_text(encoding="utf-8"))
    samples = read_datasets(args.data_dir or default_data_dir(), train_config["datasets"])
    manifest = load_manifest(args.init_from / "split_manifest.json")
    parts = {name: select(samples, manifest[name]) for name in ("train", "validation")}
    arrays = {name: two_channel_arrays(members, config, args.cache_dir) for name, members in parts.items()}
    labels = {name: np.array([s.label for s in members], np.int32) for name, members in parts.items()}
    sources = {name: [s.dataset for s in members] for name, members in parts.items()}
    logger.info("Prepared %s in %.0f s.", {k: v.shape for k, v in arrays.items()}, time.monotonic() - started)

    source = keras.saving.load_model(args.init_from / "model.keras", compile=False)
    size = config.image_size
    model = build_classifier((size, size, 2), "compact", train_config["width"], train_config["dropout"])
    inflate(source, model)
    model.compile(
        optimizer=keras.optimizers.AdamW(args.learning_rate, weight_decay=1e-4),
        loss=keras.losses.BinaryCrossentropy(),
    )
    weights = balanced_sample_weights(parts["train"], by_dataset=train_config.get("balance_sources", False))
    train_data = training_data(
        arrays["train"], labels["train"], weights, args.batch_size, args.density_dropout, args.seed
    )
    args.output.mkdir(parents=True, exist_ok=True)
    validation = arrays["validation"].astype(np.float32) / 255.0
    budget = TimeBudget(args.time_budget_min)
    model.fit(
        train_data,
        epochs=args.epochs,
        verbose=2,
        callbacks=[
            ValidationAuc(validation, labels["validation"], sources["validation"]),
            keras.callbacks.ModelCheckpoint(
                args.output / "model.keras", monitor="val_ct_ich_auc", mode="max", save_best_only=True
            ),
            keras.callbacks.EarlyStopping(monitor="val_ct_ich_auc", mode="max", patience=args.patience),
            keras.callbacks.CSVLogger(str(args.output / "training_log.csv")),
            budget,
        ],
    )
    best = keras.saving.load_model(args.output / "model.keras", compile=False)
    one_channel = validation[..., :1]
    report: dict[str, Any] = {
        "command": "python -m ml.density_experiment " + " ".join(argv or []),
        "validation": {},
    }
    for name, probabilities in (
        ("start (one channel)", predict_probabilities(source, one_channel)),
        ("density present", predict_probabilities(best, validation)),
        ("density blanked", predict_probabilities(best, without_density(validation))),
    ):
        report["validation"][name] = {
            "slice_auc": slice_aucs(probabilities, labels["validation"], sources["validation"]),
            "ct_ich_studies": normals_cleared(probabilities, parts["validation"]),
        }
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    (args.output / "validation_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
