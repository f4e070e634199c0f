"""Command line: train a haemorrhage classifier and write its model bundle.

Example::

    python -m ml.train --name ich-compact --version 1.0.0 --backbone compact
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ml.cli import ArgumentParser, add_fitting_options, data_errors, require_dir, require_file
from ml.data.datasets import default_data_dir
from ml.training import MONITORS, TrainConfig, train


def build_parser() -> ArgumentParser:
    defaults = TrainConfig()
    parser = ArgumentParser(prog="python -m ml.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--output", type=Path, help="bundle folder (default model_store/NAME/VERSION)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--name", default=defaults.name)
    parser.add_argument("--version", default=defaults.version)
    parser.add_argument("--datasets", nargs="+", default=defaults.datasets)
    parser.add_argument("--backbone", default=defaults.backbone)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--clahe", action="store_true")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    add_fitting_options(parser, defaults)
    parser.add_argument("--max-samples", type=int, help="use a random subset (smoke runs)")
    parser.add_argument("--bootstrap-resamples", type=int, default=defaults.bootstrap_resamples)
    parser.add_argument("--init-from", help="start from the weights of an earlier model.keras")
    weighting = parser.add_mutually_exclusive_group()
    weighting.add_argument(
        "--balance-sources",
        action="store_true",
        help="weigh every (dataset, label) cell of the training split equally",
    )
    weighting.add_argument(
        "--balance-labels-per-source",
        action="store_true",
        help="balance the labels inside each dataset, keeping each dataset's share",
    )
    parser.add_argument(
        "--monitor",
        choices=MONITORS,
        default=defaults.monitor,
        help="validation figure for checkpoints and early stopping: pooled AUC, or the mean of "
        "each dataset's AUC",
    )
    parser.add_argument(
        "--average-from-epoch",
        type=int,
        help="average the weights of every epoch from this one on (constant learning rate, no "
        "early stopping) instead of keeping the best checkpoint",
    )
    parser.add_argument(
        "--resample-min-scale",
        type=float,
        default=defaults.resample_min_scale,
        help="smallest scale of the down-then-up sampling augmentation",
    )
    parser.add_argument(
        "--blur-max-sigma",
        type=float,
        default=defaults.blur_max_sigma,
        help="largest Gaussian blur sigma of the augmentation, in pixels",
    )
    return parser


def parse_args(argv: list[str] | None = None, parser: ArgumentParser | None = None) -> argparse.Namespace:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.average_from_epoch is not None and not 1 <= args.average_from_epoch <= args.epochs:
        parser.error(
            f"--average-from-epoch must lie in 1..{args.epochs} (--epochs), got {args.average_from_epoch}."
        )
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parse_args(argv, parser)
    config = TrainConfig(
        name=args.name,
        version=args.version,
        datasets=args.datasets,
        backbone=args.backbone,
        width=args.width,
        image_size=args.image_size,
        clahe=args.clahe,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        patience=args.patience,
        time_budget_minutes=args.time_budget_min,
        seed=args.seed,
        max_samples=args.max_samples,
        bootstrap_resamples=args.bootstrap_resamples,
        init_from=args.init_from,
        balance_sources=args.balance_sources,
        balance_labels_per_source=args.balance_labels_per_source,
        monitor=args.monitor,
        average_from_epoch=args.average_from_epoch,
        resample_min_scale=args.resample_min_scale,
        blur_max_sigma=args.blur_max_sigma,
    )
    output = args.output or Path("model_store") / config.name / config.version
    with data_errors(parser):
        require_dir(args.data_dir, "--data-dir")
        require_file(args.init_from, "--init-from")
        card = train(config, args.data_dir, output, args.cache_dir)
    summary = {
        split: {name: entry["slice"]["metrics"]["auc"]["value"] for name, entry in report.items()}
        for split, report in card["metrics"].items()
    }
    logging.info("Slice-level AUC by split and dataset: %s", json.dumps(summary))
    logging.info("Model bundle written to %s", output)


if __name__ == "__main__":
    main()
