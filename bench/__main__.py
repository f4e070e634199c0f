"""``python -m bench``: measure the service on this machine, print a table and write JSON."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.config import DEFAULT_MODEL, BenchConfig, default_data_dir
from bench.run import command_line, run
from bench.table import format_table
from ml.cli import ArgumentParser, data_errors


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m bench",
        description="Latency, throughput, start-up and memory of the ICH service, with the naive "
        "path and the bare model for comparison. Run from the repository root.",
    )
    parser.add_argument(
        "--model-store", type=Path, default=Path("model_store"), help="Folder of model bundles."
    )
    parser.add_argument(
        "--model-name", default=DEFAULT_MODEL, help="Model to measure (the service's default model)."
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="Datasets folder (default: ICH_DATA_DIR, else ../shared/datasets).",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("artifacts/bench/results.json"), help="Where the JSON goes."
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="Sequential single-slice requests through the API, for each path (segment=false, and "
        "with segmentation when the server has a segmentation model; default 100; 10 with --quick, "
        "where memory is also read after this many).",
    )
    parser.add_argument("--quick", action="store_true", help="Small counts for a smoke run.")
    parser.add_argument("--skip-http", action="store_true", help="Measure in-process only; no server.")
    return parser


def parse_args(argv: Sequence[str] | None = None, parser: ArgumentParser | None = None) -> argparse.Namespace:
    return (parser or build_parser()).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parse_args(argv, parser)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # One line per request would bury the progress messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    requests = arguments.requests if arguments.requests is not None else (10 if arguments.quick else 100)
    # The config only checks the option values here: its ValueError is the user's to fix.
    with data_errors(parser, (ValueError,)):
        config = BenchConfig(
            model_store=arguments.model_store,
            model_name=arguments.model_name,
            data_dir=arguments.data_dir,
            output=arguments.output,
            requests=requests,
            skip_http=arguments.skip_http,
        )
        if arguments.quick:
            config = config.as_quick()
    raw_arguments = list(sys.argv[1:] if argv is None else argv)
    with data_errors(parser):
        results = run(config, command=command_line(raw_arguments))
    sys.stdout.write(format_table(results) + "\n")
    sys.stdout.write(f"\nResults written to {config.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
