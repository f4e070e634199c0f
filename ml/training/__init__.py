"""Training of the haemorrhage classifier: data, split, fit, threshold, test, model card.

:func:`train` runs the stages in order; each has its module: :mod:`ml.training.config` (the
hyperparameters), :mod:`ml.training.data` (split, preprocessed arrays, batches, weights),
:mod:`ml.training.fitting` (model, callbacks, fit) and :mod:`ml.training.card` (threshold, metrics,
robustness, latency, model card). ``python -m ml.train`` is its command line.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ml.callbacks import TimeBudget
from ml.model_io import predict_probabilities
from ml.training.card import evaluate, measure_latency, model_card
from ml.training.config import MONITORS, TrainConfig, check_config
from ml.training.data import (
    balanced_sample_weights,
    labels_balanced_per_source,
    preprocess_samples,
    read_split,
)
from ml.training.fitting import FitResult, compiled_classifier, fit

__all__ = [
    "MONITORS",
    "FitResult",
    "TimeBudget",
    "TrainConfig",
    "balanced_sample_weights",
    "labels_balanced_per_source",
    "measure_latency",
    "predict_probabilities",
    "preprocess_samples",
    "train",
]

logger = logging.getLogger(__name__)


def train(
    config: TrainConfig, data_dir: Path, output_dir: Path, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Train, choose the threshold on validation, test once, and write the model bundle.

    Every random draw follows ``config.seed`` in a fixed order (the split, the initial weights,
    the shuffling and the augmentation), so the same configuration trains the same model.
    Returns the model card that was written to ``output_dir/model_card.json``.
    """
    check_config(config)
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    split = read_split(config, data_dir, output_dir)
    preprocess_config = config.preprocess_config()
    arrays = {
        name: preprocess_samples(members, preprocess_config, cache_dir)
        for name, members in split.parts().items()
    }
    labels = {name: np.array([s.label for s in members], np.int32) for name, members in split.parts().items()}
    logger.info("Preprocessed in %.1f s.", time.monotonic() - started)

    model = compiled_classifier(config)
    fitted = fit(config, model, split, arrays, labels, output_dir)
    evaluation = evaluate(config, fitted.model, split, arrays, labels, preprocess_config)
    card = model_card(config, split, preprocess_config, fitted, evaluation, started)
    (output_dir / "train_config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
    (output_dir / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    np.savez_compressed(
        output_dir / "test_predictions.npz",
        ids=np.array([s.sample_id for s in split.test]),
        labels=labels["test"],
        probabilities=evaluation.test_probabilities,
    )
    return card
