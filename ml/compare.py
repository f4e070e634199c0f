"""Command line: a Markdown table comparing trained model bundles (for docs/experiments.md).

Example::

    python -m ml.compare artifacts/experiments/*/ model_store/ich-compact/1.0.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml.cli import ArgumentParser, data_errors
from ml.errors import DataError, MissingDataFile
from ml.export import bundle_size_mib
from ml.model_io import CARD_FILE, read_card_json

COLUMNS = (
    "model",
    "parameters",
    "MiB",
    "epochs",
    "train min",
    "CPU ms/slice",
    "val AUC",
    "test AUC ct_ich (95% CI)",
    "test sens@spec0.90 ct_ich",
    "test AUC head_ct (95% CI)",
    "half-res flip rate",
)


def _auc(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    auc = entry["slice"]["metrics"]["auc"]
    if auc["value"] is None:
        return "n/a"
    low, high = auc["ci95"]
    return f"{auc['value']:.3f} ({low:.2f}-{high:.2f})"


def row(model_dir: Path) -> list[str]:
    """One table row; a card that lacks a figure of the table is a :class:`DataError`."""
    card = read_card_json(model_dir / CARD_FILE)
    try:
        return _row(model_dir, card)
    except (KeyError, TypeError) as error:
        raise DataError(
            f"{model_dir / CARD_FILE} is not the card of a finished training run (no {error}); "
            "python -m ml.train writes one."
        ) from error


def _row(model_dir: Path, card: dict[str, Any]) -> list[str]:
    test = card["metrics"]["test"]
    validation = card["metrics"]["validation"]["all"]["slice"]["metrics"]["auc"]["value"]
    training = card["training"]
    name = f"{card['backbone']}{' + CLAHE' if card['preprocessing'].get('clahe') else ''} ({model_dir.name})"
    sensitivity = test.get("ct_ich", {}).get("slice", {}).get("sensitivity_at_specificity_0.90")
    return [
        name,
        f"{card['parameters']:,}",
        f"{bundle_size_mib(model_dir):.1f}",
        str(training["epochs_run"]),
        f"{training['seconds'] / 60:.1f}",
        f"{card.get('cpu_latency_ms_per_slice', float('nan')):.1f}",
        f"{validation:.3f}" if validation is not None else "n/a",
        _auc(test.get("ct_ich")),
        f"{sensitivity:.2f}" if sensitivity is not None else "n/a",
        _auc(test.get("head_ct")),
        f"{card['robustness']['half_resolution']['flip_rate']:.3f}",
    ]


def table(model_dirs: list[Path]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for model_dir in model_dirs:
        lines.append("| " + " | ".join(row(model_dir)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m ml.compare", description="Compare model bundles as a Markdown table."
    )
    parser.add_argument(
        "model_dirs", nargs="+", type=Path, help="bundle folders; those without a card are left out"
    )
    args = parser.parse_args(argv)
    bundles = [path for path in args.model_dirs if (path / CARD_FILE).is_file()]
    with data_errors(parser):
        if not bundles:
            raise MissingDataFile(f"None of the {len(args.model_dirs)} folders holds a {CARD_FILE}.")
        print(table(bundles))


if __name__ == "__main__":
    main()
