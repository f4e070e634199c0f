"""Command line: which slice score of a multitask bundle reads the validation slices best?

Prints, per collection, the slice AUC (reliable labels only) of every score in
``ml.slice_score.SLICE_SCORES`` computed from one forward pass of each validation slice::

    python -m ml.evaluate_scores --model-dir model_store/ich-multitask/1.0.0

The test split is not used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras

from ml.cli import ArgumentParser, data_errors
from ml.data.datasets import default_data_dir
from ml.evaluation.metrics import binary_metrics
from ml.multitask import Outputs, Part, Predictor, prepare_parts
from ml.multitask_bundle import CLASSIFIED, run_config
from ml.slice_score import SLICE_SCORES, slice_score


def score_report(parts: dict[str, Part], outputs: dict[str, Outputs]) -> dict[str, dict[str, float]]:
    """Slice AUC (reliable labels only) per collection and score."""
    report: dict[str, dict[str, float]] = {}
    for name in CLASSIFIED:
        part, answer = parts[name], outputs[name]
        keep = part.label_weights > 0
        report[name] = {}
        for method in SLICE_SCORES:
            scores = slice_score(method, answer.probability, answer.subtypes, answer.blood)
            report[name][method] = round(
                float(binary_metrics(part.labels[keep], scores[keep], 0.5)["auc"]), 4
            )
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = ArgumentParser(prog="python -m ml.evaluate_scores", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a multitask bundle or run folder")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    args = parser.parse_args(argv)
    with data_errors(parser):
        config = run_config(args.model_dir)
        parts = prepare_parts(args.data_dir, config, args.cache_dir)["validation"]
        model = keras.models.load_model(args.model_dir / "model.keras", compile=False)
        predictor = Predictor(model)
        outputs = {name: predictor(parts[name]) for name in CLASSIFIED}
        print(json.dumps(score_report(parts, outputs), indent=1))


if __name__ == "__main__":
    main()
