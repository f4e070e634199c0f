"""Command line: does test-time augmentation help a multitask bundle on the validation split?

Averages the slice probability over flipped and quarter-turned copies of every validation slice
and prints the per-collection slice AUC of each scheme beside the single pass::

    python -m ml.evaluate_tta --model-dir model_store/ich-multitask/1.0.0

The test split is not used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.cli import ArgumentParser, data_errors
from ml.data.datasets import default_data_dir
from ml.evaluation.metrics import binary_metrics
from ml.multitask import Part, prepare_parts
from ml.multitask_bundle import CLASSIFIED, run_config

# Each scheme: the (quarter turns, horizontal flip) copies whose probabilities are averaged.
SCHEMES: dict[str, list[tuple[int, bool]]] = {
    "one_pass": [(0, False)],
    "horizontal_flip": [(0, False), (0, True)],
    "quarter_turns": [(turns, False) for turns in range(4)],
    "turns_and_flips": [(turns, flip) for turns in range(4) for flip in (False, True)],
}


def _probabilities(forward: Any, images: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    out = []
    for start in range(0, len(images), 32):
        batch = np.rot90(
            images[start : start + 32, :, :, np.newaxis].astype(np.float32) / 255.0, turns, axes=(1, 2)
        )
        if flip:
            batch = batch[:, :, ::-1]
        out.append(forward(tf.constant(np.ascontiguousarray(batch))).numpy().ravel())
    return np.concatenate(out) if out else np.zeros(0)


def tta_report(model: keras.Model, parts: dict[str, Part]) -> dict[str, dict[str, float]]:
    """Slice AUC (reliable labels only) per collection and scheme."""
    forward = tf.function(lambda x: model(x, training=False)["probability"])
    report: dict[str, dict[str, float]] = {}
    for name in CLASSIFIED:
        part = parts[name]
        keep = part.label_weights > 0
        copies = {copy: _probabilities(forward, part.images, *copy) for copy in SCHEMES["turns_and_flips"]}
        report[name] = {
            scheme: round(
                float(
                    binary_metrics(
                        part.labels[keep], np.mean([copies[c] for c in chosen], axis=0)[keep], 0.5
                    )["auc"]
                ),
                4,
            )
            for scheme, chosen in SCHEMES.items()
        }
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(prog="python -m ml.evaluate_tta", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a multitask bundle or run folder")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    args = parser.parse_args(argv)
    with data_errors(parser):
        config = run_config(args.model_dir)
        parts = prepare_parts(args.data_dir, config, args.cache_dir)["validation"]
        model = keras.models.load_model(args.model_dir / "model.keras", compile=False)
        print(json.dumps(tta_report(model, parts), indent=1))


if __name__ == "__main__":
    main()
