"""Command line: does test-time augmentation help a multitask bundle on the validation split?

Averages the slice probability over flipped and quarter-turned copies of every validation slice
and prints the per-collection slice AUC of each scheme beside the single pass::

    python -m ml.evaluate_tta --model-dir model_store/ich-multitask/1.0.0

The test split is not used.
"""

from __future__ import annotations

import json
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ml.evaluation.metrics import binary_metrics
from ml.multitask import Part
from ml.multitask_bundle import CLASSIFIED, validation_command

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
    model, parts = validation_command("python -m ml.evaluate_tta", __doc__.splitlines()[0], argv)
    print(json.dumps(tta_report(model, parts), indent=1))


if __name__ == "__main__":
    main()
