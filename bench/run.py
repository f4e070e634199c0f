"""One benchmark run: every measurement, the ratios and targets, and the JSON they are written to.

Every figure is a median and a 95th percentile over repeated runs after a warm-up, on the machine
the benchmark runs on. Three ways of analysing the same CT series are compared in one run
(:mod:`bench.in_process`: optimised, naive and the bare model's floor). The HTTP figures come
from the real service (``python -m app`` under uvicorn) on a loopback port
(:mod:`bench.over_http`); when ``/readyz`` names a segmentation model, that model's bare forward
pass is then measured in-process as a second floor.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.config import BenchConfig
from bench.in_process import measure_segmentation_floor, newest_bundle, run_in_process
from bench.inputs import pick_slice_png
from bench.machine import machine_info
from bench.over_http import run_http
from bench.targets import compute_ratios, evaluate_targets, lookup

logger = logging.getLogger("bench")

__all__ = ["command_line", "run"]


def run(config: BenchConfig, command: str = "python -m bench") -> dict[str, Any]:
    """Run every measurement, write the JSON to ``config.output`` and return the results."""
    # A missing model or data folder is reported before anything is measured or started.
    newest_bundle(config.model_store, config.model_name)
    pick_slice_png(config.data_dir)
    results: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": config.quick,
        "config": config.to_dict(),
        "machine": machine_info(),
    }
    load, cores = results["machine"]["load_average_at_start"][0], results["machine"]["nproc"]
    if load > 0.5 * cores:
        logger.warning(
            "The machine is busy (load average %.1f on %d cores): the figures will be noisy.", load, cores
        )
    started = time.perf_counter()
    results["in_process"] = run_in_process(config)
    results["in_process"]["segmentation_floor"] = None
    results["http"] = None if config.skip_http else run_http(config)
    served_segmentation = lookup(results, "http", "segmentation_model")
    # A multitask model outlines in its own pass: its floor is the classifier floor already.
    results["in_process"]["outlines_in_one_pass"] = bool(
        served_segmentation
    ) and served_segmentation == lookup(results, "http", "served_models", "classification")
    if served_segmentation and not results["in_process"]["outlines_in_one_pass"]:
        logger.info("In-process: bare segmentation model %s", served_segmentation)
        results["in_process"]["segmentation_floor"] = measure_segmentation_floor(
            config.model_store, str(served_segmentation), pick_slice_png(config.data_dir).read_bytes(), config
        )
    results["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["ratios"] = compute_ratios(results)
    results["targets"] = evaluate_targets(results)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


def command_line(argv: Sequence[str]) -> str:
    """The command as a person would type it again."""
    return " ".join(["python -m bench", *argv])
