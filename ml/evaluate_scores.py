"""Command line: which slice score of a multitask bundle reads the validation slices best?

Prints, per collection, the slice AUC (reliable labels only) of every score in
``ml.slice_score.SLICE_SCORES`` computed from one forward pass of each validation slice::

    python -m ml.evaluate_scores --model-dir model_store/ich-multitask/1.0.0

The test split is not used.
"""

from __future__ import annotations

import json

from ml.evaluation.metrics import binary_metrics
from ml.multitask import Outputs, Part, Predictor
from ml.multitask_bundle import CLASSIFIED, validation_command
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
    model, parts = validation_command("python -m ml.evaluate_scores", __doc__.splitlines()[0], argv)
    predictor = Predictor(model)
    outputs = {name: predictor(parts[name]) for name in CLASSIFIED}
    print(json.dumps(score_report(parts, outputs), indent=1))


if __name__ == "__main__":
    main()
