"""Command line: train the three-headed network on every collection's labels.

Example::

    python -m ml.train_multitask --output artifacts/experiments/multitask-stage1 --time-budget-min 60

The best epoch by the validation score is kept as ``model.keras`` and the last as
``last.keras`` (continue a run with ``--init-from .../last.keras``); the test split is not used.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ml.cli import ArgumentParser, add_fitting_options, data_errors
from ml.data.datasets import default_data_dir
from ml.models.multitask import BACKBONES
from ml.multitask import COLLECTIONS, FREEZE_CHOICES, MultitaskConfig, train_multitask


def build_parser() -> argparse.ArgumentParser:
    defaults = MultitaskConfig()
    parser = ArgumentParser(prog="python -m ml.train_multitask", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--output", type=Path, required=True, help="folder for the model and its log")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    add_fitting_options(parser, defaults)
    parser.add_argument("--split-manifest", default=defaults.split_manifest)
    parser.add_argument(
        "--collections",
        nargs="+",
        choices=COLLECTIONS,
        default=list(COLLECTIONS),
        help="collections to learn from",
    )
    parser.add_argument(
        "--shares",
        nargs="+",
        metavar="COLLECTION=SHARE",
        help=f"share of each batch per collection (default: {' '.join(f'{k}={v}' for k, v in defaults.shares.items())})",
    )
    parser.add_argument("--no-rotate-90", action="store_true", help="no random quarter turns in augmentation")
    parser.add_argument("--init-from", help="start from the weights of an earlier model.keras")
    parser.add_argument(
        "--backbone", choices=BACKBONES, default=defaults.backbone, help="encoder of a new network"
    )
    parser.add_argument(
        "--freeze",
        choices=FREEZE_CHOICES,
        default=defaults.freeze,
        help="keep the classifier's encoder and slice head, or every batch normalisation, as they are",
    )
    parser.add_argument(
        "--encoder-from",
        help="start a new compact network's encoder and slice head from a trained classifier",
    )
    return parser


def parse_args(
    argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    defaults = MultitaskConfig()
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    shares = defaults.shares
    if args.shares:
        try:
            shares = {name: float(value) for name, value in (item.split("=", 1) for item in args.shares)}
        except ValueError:
            parser.error(f"--shares takes COLLECTION=SHARE pairs, got {' '.join(args.shares)}.")
        unknown = sorted(set(shares) - set(COLLECTIONS))
        if unknown:
            parser.error(f"--shares names unknown collections {unknown}; known: {list(COLLECTIONS)}.")
    args.shares = shares
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parse_args(argv, parser)
    config = MultitaskConfig(
        image_size=args.image_size,
        width=args.width,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        patience=args.patience,
        time_budget_minutes=args.time_budget_min,
        seed=args.seed,
        split_manifest=args.split_manifest,
        collections=tuple(args.collections),
        rotate_90=not args.no_rotate_90,
        shares=args.shares,
        init_from=args.init_from,
        backbone=args.backbone,
        encoder_from=args.encoder_from,
        freeze=args.freeze,
    )
    with data_errors(parser):
        summary = train_multitask(config, args.data_dir, args.output, args.cache_dir)
    logging.info("Validation: %s", json.dumps(summary["validation"]))
    logging.info("Written to %s", args.output)


if __name__ == "__main__":
    main()
