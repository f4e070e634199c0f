"""Ratios of the medians and the issue's targets as pass/fail, from the results of one run."""

from __future__ import annotations

from typing import Any

from bench.client import STUDIES_PATH

__all__ = ["compute_ratios", "evaluate_targets", "lookup"]


def lookup(results: dict[str, Any], *keys: str) -> Any:
    """``results[key][key]...``, or ``None`` where a part was not measured."""
    value: Any = results
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 2)


def compute_ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Ratios of medians: how far each path is from the compute floor and from the others."""
    floor_slice = lookup(results, "in_process", "single_slice", "floor_ms", "median")
    floor_batch = lookup(results, "in_process", "series", "floor_batch_ms", "median")
    optimised = lookup(results, "in_process", "series", "optimised_ms", "median")
    segmentation_floor = lookup(results, "in_process", "segmentation_floor", "floor_ms", "median")
    if lookup(results, "in_process", "outlines_in_one_pass"):
        segmentation_floor = 0.0
    return {
        "api_slice_over_floor_slice": _ratio(
            lookup(results, "http", "single_slice", "end_to_end_ms", "median"), floor_slice
        ),
        "api_slice_with_segmentation_over_floors": _ratio(
            lookup(results, "http", "single_slice_with_segmentation", "end_to_end_ms", "median"),
            None if floor_slice is None or segmentation_floor is None else floor_slice + segmentation_floor,
        ),
        "in_process_slice_over_floor_slice": _ratio(
            lookup(results, "in_process", "single_slice", "end_to_end_ms", "median"), floor_slice
        ),
        "gradcam_pass_over_floor_slice": _ratio(
            lookup(results, "in_process", "single_slice", "forward_and_gradcam_ms", "median"), floor_slice
        ),
        "naive_over_optimised_series": _ratio(
            lookup(results, "in_process", "series", "naive_ms", "median"), optimised
        ),
        "optimised_series_over_floor_batch": _ratio(optimised, floor_batch),
        "floor_slice_x40_over_floor_batch": _ratio(
            None
            if floor_slice is None
            else floor_slice * lookup(results, "in_process", "series", "num_slices"),
            floor_batch,
        ),
    }


def _target(
    name: str, goal: str, value: float | None, passed: bool | None, note: str = "", info: bool = False
) -> dict[str, Any]:
    return {"name": name, "goal": goal, "value": value, "pass": passed, "info": info, "note": note}


def _check(value: float | None, limit: float, below: bool = True) -> bool | None:
    if value is None:
        return None
    return value < limit if below else value >= limit


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as pass/fail (``None``: not measured in this run).

    When the server segments every slice by default, two rows marked ``info`` follow (never
    pass/fail: the targets were set for classification and Grad-CAM): the API's single slice with
    segmentation, and its ratio to the two bare models' floors added together.
    """
    ratios = results["ratios"]
    api_p50 = lookup(results, "http", "single_slice", "end_to_end_ms", "median")
    study = lookup(results, "http", "study") or {}
    series_ms = lookup(results, "in_process", "series", "optimised_ms", "median")
    series_note = "in-process: decode, predict_many, overlays, PNGs"
    segmentation = lookup(results, "http", "segmentation_model")
    if study.get("available"):
        series_ms = lookup(study, "end_to_end_ms", "median")
        series_note = f"POST {STUDIES_PATH} over HTTP"
        if segmentation:
            series_note += f", with segmentation ({segmentation})"
    num_slices = lookup(results, "in_process", "series", "num_slices")
    if num_slices is not None and num_slices != 40:
        series_note += f"; {num_slices} slices, not 40"
    start = lookup(results, "http", "start_to_ready_s", "median")
    growth = lookup(results, "http", "memory", "growth_percent")
    targets = [
        _target(
            "api_slice_p50",
            "< 80 ms",
            api_p50,
            _check(api_p50, 80.0),
            "with Grad-CAM, without PDF; segment=false",
        ),
        _target(
            "api_slice_over_floor",
            "< 2x",
            ratios["api_slice_over_floor_slice"],
            _check(ratios["api_slice_over_floor_slice"], 2.0),
            "API p50 (segment=false) / bare model on one ready 1-slice tensor",
        ),
        _target("series_end_to_end", "< 3000 ms", series_ms, _check(series_ms, 3000.0), series_note),
        _target(
            "optimised_vs_naive",
            ">= 3x",
            ratios["naive_over_optimised_series"],
            _check(ratios["naive_over_optimised_series"], 3.0, below=False),
            "naive / optimised, same series, same run",
        ),
        _target("start_to_ready", "< 15 s", start, _check(start, 15.0), "median of the starts"),
        _target(
            "memory_growth",
            "< 10 %",
            growth,
            _check(growth, 10.0),
            f"RSS after {lookup(results, 'http', 'memory', 'requests')} requests vs right after start",
        ),
    ]
    segmented_p50 = lookup(results, "http", "single_slice_with_segmentation", "end_to_end_ms", "median")
    if segmented_p50 is not None:
        targets += [
            _target(
                "api_slice_segmented_p50",
                "info",
                segmented_p50,
                None,
                f"default request, segmentation {segmentation}; the 80 ms target is without it",
                info=True,
            ),
            _target(
                "api_slice_segmented_over_floors",
                "info",
                ratios.get("api_slice_with_segmentation_over_floors"),
                None,
                "API p50 with segmentation / (classifier floor + segmentation floor)",
                info=True,
            ),
        ]
    return targets
