"""Training of the haemorrhage classifier: data, split, fit, threshold, test, model card."""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.callbacks import TimeBudget, WeightAverage, refresh_batch_norm
from ml.data.augmentation import AugmentationConfig, Augmenter
from ml.data.datasets import Sample, load_image, read_datasets
from ml.data.preprocessing import PreprocessConfig, preprocess
from ml.data.splits import Split, patient_split, write_manifest
from ml.evaluation.metrics import choose_threshold, mean_source_auc, patient_level, summarize
from ml.evaluation.robustness import robustness_report
from ml.model_io import predict_probabilities
from ml.models.classifier import GRADCAM_LAYERS, build_classifier

__all__ = [
    "FitResult",
    "TrainConfig",
    "measure_latency",
    "predict_probabilities",
    "preprocess_samples",
    "train",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyperparameters; written next to the model as ``train_config.json``."""

    name: str = "ich-compact"
    version: str = "1.0.0"
    datasets: list[str] = field(default_factory=lambda: ["head_ct", "ct_ich"])
    backbone: str = "compact"
    width: int = 32
    dropout: float = 0.3
    image_size: int = 224
    clahe: bool = False
    batch_size: int = 32
    epochs: int = 60
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 12
    time_budget_minutes: float = 40.0
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    target_sensitivity: float = 0.95
    seed: int = 42
    max_samples: int | None = None
    bootstrap_resamples: int = 1000
    init_from: str | None = None
    # Weigh every (dataset, label) cell of the training split equally, so the small head_ct
    # collection is not drowned out by CT-ICH; otherwise each label over all data.
    balance_sources: bool = False
    # Balance the labels inside each dataset, keeping each dataset's share of the total, so
    # that which collection an image comes from says nothing about its label.
    balance_labels_per_source: bool = False
    # What the checkpoint and early stopping follow on the validation split: "auc" (pooled over
    # datasets) or "source_auc" (the mean of each dataset's own AUC, blind to which dataset
    # has more positives).
    monitor: str = "auc"
    # Stochastic weight averaging: from this epoch on (counting from 1) the weights at the end
    # of every epoch are averaged, at a constant learning rate and without early stopping, and
    # the average (with batch-normalisation statistics measured again) is the model, instead
    # of the best checkpoint.
    average_from_epoch: int | None = None
    # Augmentation's down-then-up sampling scale and blur (see AugmentationConfig).
    resample_min_scale: float = 0.25
    blur_max_sigma: float = 1.5

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(image_size=self.image_size, clahe=self.clahe)

    def command(self) -> str:
        """The ``python -m ml.train`` command line that trains with this configuration."""
        parts = [
            f"python -m ml.train --name {self.name} --version {self.version}",
            f"--backbone {self.backbone} --datasets {' '.join(self.datasets)}",
            f"--epochs {self.epochs} --batch-size {self.batch_size} --image-size {self.image_size}",
            f"--time-budget-min {self.time_budget_minutes:g} --seed {self.seed}",
        ]
        defaults = TrainConfig()
        for flag, attribute in _OPTIONAL_FLAGS:
            value = getattr(self, attribute)
            if value == getattr(defaults, attribute):
                continue
            if isinstance(value, bool):
                parts.append(flag)
            else:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        return " ".join(parts)


# Command-line options named only when they differ from TrainConfig's defaults.
_OPTIONAL_FLAGS = (
    ("--width", "width"),
    ("--clahe", "clahe"),
    ("--learning-rate", "learning_rate"),
    ("--init-from", "init_from"),
    ("--patience", "patience"),
    ("--balance-sources", "balance_sources"),
    ("--balance-labels-per-source", "balance_labels_per_source"),
    ("--monitor", "monitor"),
    ("--average-from-epoch", "average_from_epoch"),
    ("--resample-min-scale", "resample_min_scale"),
    ("--blur-max-sigma", "blur_max_sigma"),
)


MONITORS = ("auc", "source_auc")


class SourceAuc(keras.callbacks.Callback):
    """Adds ``val_source_auc`` to each epoch's logs (see :func:`mean_source_auc`), for the
    checkpoint and early stopping that come after it in the callback list."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, sources: Sequence[str]) -> None:
        super().__init__()
        self.images, self.labels, self.sources = images, labels, list(sources)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = mean_source_auc(self.labels, predict_probabilities(self.model, self.images), self.sources)
        if logs is not None:
            logs["val_source_auc"] = value
        logger.info("epoch %d: mean validation AUC over datasets %.4f", epoch + 1, value)


def _cache_key(samples: Sequence[Sample], config: PreprocessConfig) -> str:
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for sample in samples:
        digest.update(str(sample.path).encode())
    return digest.hexdigest()[:16]


def preprocess_samples(
    samples: Sequence[Sample], config: PreprocessConfig, cache_dir: Path | None = None
) -> np.ndarray:
    """Preprocess every sample once; returns uint8 ``N x S x S x 1`` (cached on disk)."""
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"preprocessed-{_cache_key(samples, config)}.npy"
        if cache_path.is_file():
            return np.load(cache_path)
    size = config.image_size
    images = np.zeros((len(samples), size, size, 1), dtype=np.uint8)
    for index, sample in enumerate(samples):
        result = preprocess(load_image(sample.path), config)
        # uint8 storage quarters memory; the model sees the same grey levels a PNG would.
        images[index] = np.round(result.image * 255.0).astype(np.uint8)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_path, images)
    return images


def _dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    augmenter: Augmenter | None,
    shuffle_seed: int | None,
    weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    columns: tuple[np.ndarray, ...] = (images, labels.astype(np.float32))
    if weights is not None:
        columns += (weights.astype(np.float32),)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda x, *rest: (tf.cast(x, tf.float32) / 255.0, *rest), num_parallel_calls=tf.data.AUTOTUNE
    )
    if augmenter is not None:
        dataset = dataset.map(lambda x, *rest: (augmenter(x), *rest))
    return dataset.prefetch(tf.data.AUTOTUNE)


def balanced_sample_weights(samples: Sequence[Sample], by_dataset: bool = True) -> np.ndarray:
    """Per-sample weights giving every (dataset, label) cell, or every label when not
    ``by_dataset``, the same total weight (the latter is plain class weighting).

    The weights average 1 over the samples, so the loss keeps its scale.
    """
    cells = [(sample.dataset if by_dataset else "", sample.label) for sample in samples]
    counts = Counter(cells)
    share = len(cells) / len(counts)
    return np.array([share / counts[cell] for cell in cells], dtype=np.float64)


def labels_balanced_per_source(samples: Sequence[Sample]) -> np.ndarray:
    """Per-sample weights under which every dataset keeps its share of the total weight and,
    inside it, every label present carries the same weight.

    Plain class weighting over pooled data gives each collection the pooled label balance
    instead of its own: with 50% positives in a small collection and 12% in a large one, the
    small one's positives outweigh its negatives several times over, and "looks like that
    collection" becomes evidence of haemorrhage. Here no collection's look changes the odds.
    The weights average 1 over the samples.
    """
    datasets = Counter(sample.dataset for sample in samples)
    cells = Counter((sample.dataset, sample.label) for sample in samples)
    labels_in = Counter(dataset for dataset, _ in cells)
    return np.array(
        [datasets[s.dataset] / (labels_in[s.dataset] * cells[(s.dataset, s.label)]) for s in samples],
        dtype=np.float64,
    )


def _evaluate_split(
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


def _check_config(config: TrainConfig) -> None:
    """Refuse option combinations that cannot train, before anything is read or written."""
    if config.balance_sources and config.balance_labels_per_source:
        raise ValueError("Choose one weighting: balance_sources or balance_labels_per_source.")
    if config.monitor not in MONITORS:
        raise ValueError(f"Unknown monitor {config.monitor!r}; choose one of {MONITORS}.")
    if config.average_from_epoch is not None and not 1 <= config.average_from_epoch <= config.epochs:
        raise ValueError(
            f"average_from_epoch must lie in 1..{config.epochs}, got {config.average_from_epoch}."
        )


def _read_split(config: TrainConfig, data_dir: Path, output_dir: Path) -> Split:
    """The datasets (a seeded subset with ``max_samples``), split by patient; the manifest is written."""
    samples = read_datasets(data_dir, config.datasets)
    if config.max_samples is not None:
        rng = np.random.default_rng(config.seed)
        keep = sorted(rng.choice(len(samples), size=min(config.max_samples, len(samples)), replace=False))
        samples = [samples[i] for i in keep]
    split: Split = patient_split(samples, config.validation_fraction, config.test_fraction, config.seed)
    write_manifest(split, output_dir / "split_manifest.json", config.seed)
    for name, members in split.parts().items():
        logger.info(
            "%s: %d images, %d positive, %d patients",
            name,
            len(members),
            sum(s.label for s in members),
            len({s.group for s in members}),
        )
    return split


def _compiled_classifier(config: TrainConfig) -> keras.Model:
    """A new classifier (or the weights of ``init_from``), compiled with its optimiser and loss."""
    model = build_classifier(
        (config.image_size, config.image_size, 1), config.backbone, config.width, config.dropout
    )
    if config.init_from:
        # Continue from an earlier run of the same architecture (weights only; a fresh
        # optimiser, split and threshold).
        model.set_weights(keras.saving.load_model(config.init_from, compile=False).get_weights())
        logger.info("Initialised from %s", config.init_from)
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, weight_decay=config.weight_decay),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


@dataclass
class FitResult:
    """The model a fit kept (best checkpoint or weight average, reloaded) and how the fit went.

    ``averaged_epochs`` is how many epochs a weight average took in, ``None`` without one.
    """

    model: keras.Model
    augmentation: AugmentationConfig
    epochs_run: int
    stopped_by_time_budget: bool
    seconds: float
    averaged_epochs: int | None = None


def _callbacks(
    config: TrainConfig,
    split: Split,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    output_dir: Path,
) -> tuple[list[keras.callbacks.Callback], WeightAverage | None, TimeBudget]:
    """The fit's callbacks in their order, the weight average (when one is taken) and the budget.

    The monitored value must be in the logs before the checkpoint and early stopping read it,
    so :class:`SourceAuc` comes first.
    """
    budget = TimeBudget(config.time_budget_minutes)
    monitor = f"val_{config.monitor}"
    callbacks: list[keras.callbacks.Callback] = []
    if config.monitor == "source_auc":
        sources = [sample.dataset for sample in split.validation]
        callbacks.append(SourceAuc(arrays["validation"], labels["validation"], sources))
    average = None
    if config.average_from_epoch is None:
        callbacks += [
            keras.callbacks.ModelCheckpoint(
                output_dir / "model.keras", monitor=monitor, mode="max", save_best_only=True
            ),
            keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=4, min_lr=1e-5),
        ]
    else:
        average = WeightAverage(config.average_from_epoch)
        callbacks.append(average)
    callbacks += [keras.callbacks.CSVLogger(str(output_dir / "training_log.csv")), budget]
    return callbacks, average, budget


def _fit(
    config: TrainConfig,
    model: keras.Model,
    split: Split,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    output_dir: Path,
) -> FitResult:
    """Fit on the weighted, augmented training split; save and reload the model that is kept."""
    augmentation = AugmentationConfig(
        resample_min_scale=config.resample_min_scale, blur_max_sigma=config.blur_max_sigma
    )
    if config.balance_labels_per_source:
        train_weights = labels_balanced_per_source(split.train)
    else:
        train_weights = balanced_sample_weights(split.train, by_dataset=config.balance_sources)
    train_data = _dataset(
        arrays["train"],
        labels["train"],
        config.batch_size,
        Augmenter(augmentation, config.seed),
        config.seed,
        train_weights,
    )
    validation_data = _dataset(arrays["validation"], labels["validation"], config.batch_size, None, None)
    checkpoint_path = output_dir / "model.keras"
    callbacks, average, budget = _callbacks(config, split, arrays, labels, output_dir)
    fit_started = time.monotonic()
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        callbacks=callbacks,
        # A progress bar on a terminal; one line per epoch in logs.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    averaged_epochs = None
    if average is not None:
        averaged_epochs = average.apply()
        if averaged_epochs:
            refresh_batch_norm(model, train_data)
        else:
            logger.warning("No epoch reached epoch %d: keeping the last weights.", config.average_from_epoch)
        model.save(checkpoint_path)
    training_seconds = time.monotonic() - fit_started
    return FitResult(
        model=keras.saving.load_model(checkpoint_path, compile=False),
        augmentation=augmentation,
        epochs_run=len(history.history.get("loss", [])),
        stopped_by_time_budget=budget.stopped_early,
        averaged_epochs=averaged_epochs,
        seconds=training_seconds,
    )


@dataclass
class _Evaluation:
    """The threshold chosen on validation and what it gives on validation and, once, on test."""

    threshold: float
    test_probabilities: np.ndarray
    validation: dict[str, Any]
    test: dict[str, Any]
    robustness: dict[str, Any]


def _evaluate(
    config: TrainConfig,
    model: keras.Model,
    split: Split,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    preprocess_config: PreprocessConfig,
) -> _Evaluation:
    """Choose the threshold on validation, then measure both splits and the test split's robustness."""
    validation_probs = predict_probabilities(model, arrays["validation"])
    threshold = choose_threshold(labels["validation"], validation_probs, config.target_sensitivity)
    test_probs = predict_probabilities(model, arrays["test"])
    validation_report = _evaluate_split(
        split.validation, validation_probs, threshold, config.bootstrap_resamples, config.seed
    )
    test_report = _evaluate_split(split.test, test_probs, threshold, config.bootstrap_resamples, config.seed)
    robustness = robustness_report(model, split.test, preprocess_config, threshold)
    return _Evaluation(threshold, test_probs, validation_report, test_report, robustness)


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


def _model_card(
    config: TrainConfig,
    split: Split,
    preprocess_config: PreprocessConfig,
    fitted: FitResult,
    evaluation: _Evaluation,
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


def train(
    config: TrainConfig, data_dir: Path, output_dir: Path, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Train, choose the threshold on validation, test once, and write the model bundle.

    Every random draw follows ``config.seed`` in a fixed order (the split, the initial weights,
    the shuffling and the augmentation), so the same configuration trains the same model.
    Returns the model card that was written to ``output_dir/model_card.json``.
    """
    _check_config(config)
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    split = _read_split(config, data_dir, output_dir)
    preprocess_config = config.preprocess_config()
    arrays = {
        name: preprocess_samples(members, preprocess_config, cache_dir)
        for name, members in split.parts().items()
    }
    labels = {name: np.array([s.label for s in members], np.int32) for name, members in split.parts().items()}
    logger.info("Preprocessed in %.1f s.", time.monotonic() - started)

    model = _compiled_classifier(config)
    fitted = _fit(config, model, split, arrays, labels, output_dir)
    evaluation = _evaluate(config, fitted.model, split, arrays, labels, preprocess_config)
    card = _model_card(config, split, preprocess_config, fitted, evaluation, started)
    (output_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
    (output_dir / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    np.savez_compressed(
        output_dir / "test_predictions.npz",
        ids=np.array([s.sample_id for s in split.test]),
        labels=labels["test"],
        probabilities=evaluation.test_probabilities,
    )
    return card
