"""Command line: train the haemorrhage segmentation-and-subtype model and write its bundle.

Example::

    python -m ml.train_seg --name ich-unet --version 1.0.0 --classifier-dir model_store/ich-compact/1.0.0
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ml.cli import ArgumentParser, add_fitting_options, data_errors, require_dir, require_file
from ml.data.datasets import default_data_dir
from ml.seg_training import SegTrainConfig, train_segmentation


def build_parser() -> ArgumentParser:
    defaults = SegTrainConfig()
    parser = ArgumentParser(prog="python -m ml.train_seg", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--output", type=Path, help="bundle folder (default model_store/NAME/VERSION)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    parser.add_argument("--name", default=defaults.name)
    parser.add_argument("--version", default=defaults.version)
    parser.add_argument(
        "--classifier-dir",
        default=defaults.classifier_dir,
        help="classifier bundle whose preprocessing and CT-ICH patient split are reused",
    )
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--steps-per-epoch", type=int, default=defaults.steps_per_epoch)
    add_fitting_options(parser, defaults)
    parser.add_argument("--bootstrap-resamples", type=int, default=defaults.bootstrap_resamples)
    parser.add_argument("--init-from", help="start from the weights of an earlier model.keras")
    parser.add_argument("--max-ct-ich", type=int, help="use a random subset of CT-ICH slices (smoke runs)")
    return parser


def parse_args(argv: list[str] | None = None, parser: ArgumentParser | None = None) -> argparse.Namespace:
    return (parser or build_parser()).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parse_args(argv, parser)
    config = SegTrainConfig(
        name=args.name,
        version=args.version,
        classifier_dir=str(args.classifier_dir),
        width=args.width,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        patience=args.patience,
        time_budget_minutes=args.time_budget_min,
        seed=args.seed,
        bootstrap_resamples=args.bootstrap_resamples,
        max_ct_ich=args.max_ct_ich,
        init_from=args.init_from,
    )
    output = args.output or Path("model_store") / config.name / config.version
    with data_errors(parser):
        require_dir(args.data_dir, "--data-dir")
        require_dir(args.classifier_dir, "--classifier-dir")
        require_file(args.init_from, "--init-from")
        card = train_segmentation(config, args.data_dir, output, args.cache_dir)
    test = card["metrics"]["test"]
    logging.info(
        "Test: any-blood Dice %s, normal slices clear %s, pointing game %s",
        json.dumps(test["segmentation"]["any_blood"]["dice"]),
        test["normal_ct_ich_slices"]["clear_fraction"],
        card["pointing_game"]["test_volumes"]["hit_rate"],
    )
    logging.info("Model bundle written to %s", output)


if __name__ == "__main__":
    main()
