"""The plain-text table ``python -m bench`` prints: medians, 95th percentiles, ratios and targets.

Each section of the table is one function that returns its lines; a part that was not measured
in this run (no server, no segmentation model, no study endpoint) prints as such or not at all.
"""

from __future__ import annotations

from typing import Any

from bench.client import STUDIES_PATH
from bench.targets import lookup

__all__ = ["format_table"]


def _stat_row(label: str, stats: dict[str, Any] | None, unit: str = "ms") -> str:
    if not stats:
        return f"  {label:<52} {'n/a':>10}"
    return f"  {label:<52} {stats['median']:>9.1f} {unit:<2} {stats['p95']:>9.1f} {unit:<2} n={stats['n']}"


def _http_single_rows(entry: dict[str, Any]) -> list[str]:
    rows = [_stat_row("end to end (client)", entry["end_to_end_ms"])]
    for name, stats in entry["server_stages_ms"].items():
        rows.append(_stat_row(f"  server {name}", stats))
    rows.append(
        _stat_row("  outside the stages (HTTP, multipart, auth, DB row)", entry.get("outside_stages_ms"))
    )
    return rows


def _sum_of_medians(first: dict[str, Any] | None, second: dict[str, Any] | None) -> float | None:
    if not first or not second:
        return None
    return round(float(first["median"]) + float(second["median"]), 3)


def _header_lines(results: dict[str, Any]) -> list[str]:
    """When, on which machine and model, and what the server served by default."""
    machine = results["machine"]
    model = lookup(results, "in_process", "model") or {}
    lines = [
        f"ICH Detect benchmark, {results['timestamp']}",
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), TensorFlow {machine['tensorflow']}, "
        f"load average at start {machine['load_average_at_start']}, "
        f"at end {machine.get('load_average_at_end')}",
        f"model {model.get('name')}/{model.get('version')} ({model.get('image_size')} px, "
        f"{model.get('parameters')} parameters)"
        + (", QUICK RUN: figures not meaningful" if results["quick"] else ""),
    ]
    http = results.get("http")
    if http:
        served = http.get("served_models") or {}
        lines.append(
            f"server default configuration: classification {served.get('classification', 'n/a')}, "
            f"segmentation {http.get('segmentation_model') or 'none'} (PDF, throughput, memory, "
            "start-up and the study upload use it; the targets' single slice sends segment=false)"
        )
    return lines


def _in_process_slice_lines(single: dict[str, Any], image: dict[str, Any]) -> list[str]:
    """The single slice in-process: end to end, its stages, the floor and the Grad-CAM pass."""
    lines = [f"Single slice in-process ({image.get('path')}, {image.get('size')})"]
    lines.append(_stat_row("end to end (decode .. PNG encoding)", single.get("end_to_end_ms")))
    for name, stats in single.get("stages_ms", {}).items():
        lines.append(_stat_row(f"  {name}", stats))
    lines.append(_stat_row("bare model, 1 ready tensor (floor)", single.get("floor_ms")))
    lines.append(_stat_row("compiled forward + Grad-CAM pass alone", single.get("forward_and_gradcam_ms")))
    lines.append(
        f"  {'Grad-CAM beyond the forward pass (medians)':<52} {single.get('gradcam_extra_ms', 0):>9.1f} ms"
    )
    return lines


def _http_slice_lines(results: dict[str, Any], single: dict[str, Any]) -> list[str]:
    """The single slice over HTTP, with and without segmentation, the floors and the PDF report."""
    http_single = lookup(results, "http", "single_slice")
    if not http_single:
        return []
    lines = [
        "Single slice through the HTTP API, classification + Grad-CAM only "
        "(segment=false form field; the targets' rows)"
    ]
    lines += _http_single_rows(http_single)
    segmented = lookup(results, "http", "single_slice_with_segmentation")
    segmentation_floor = lookup(results, "in_process", "segmentation_floor")
    if segmented:
        lines.append(
            f"Single slice through the HTTP API with segmentation ({segmented.get('model')}; default "
            "request; information, no target)"
        )
        lines += _http_single_rows(segmented)
    else:
        lines.append("Single slice with segmentation: not measured (the server serves no segmentation model)")
    if lookup(results, "in_process", "outlines_in_one_pass"):
        lines.append(
            "  the served model outlines in its own pass: the classifier floor above includes the outline"
        )
    if segmentation_floor:
        lines.append(
            _stat_row("bare segmentation model, 1 ready tensor (floor)", segmentation_floor["floor_ms"])
        )
        floors = _sum_of_medians(single.get("floor_ms"), segmentation_floor["floor_ms"])
        if floors is not None:
            lines.append(f"  {'classifier floor + segmentation floor (medians)':<52} {floors:>9.1f} ms")
    lines.append(
        _stat_row("PDF report, first GET (default request's predictions)", lookup(results, "http", "pdf_ms"))
    )
    return lines


def _series_lines(results: dict[str, Any]) -> list[str]:
    """The DICOM series in-process (optimised, naive, floor) and through the study endpoint."""
    series = lookup(results, "in_process", "series") or {}
    lines = [f"{series.get('num_slices')}-slice DICOM series in-process"]
    lines.append(_stat_row("decode only", series.get("decode_ms")))
    lines.append(_stat_row("optimised (predict_many, batched)", series.get("optimised_ms")))
    lines.append(_stat_row("naive (predict + fresh GradientTape per slice)", series.get("naive_ms")))
    lines.append(_stat_row("bare model on the ready batch (floor)", series.get("floor_batch_ms")))
    lines.append(
        f"  {'slices per second, optimised / naive':<52} {series.get('optimised_slices_per_second', 0):>9.1f}"
        f"    {series.get('naive_slices_per_second', 0):>9.1f}"
    )
    study = lookup(results, "http", "study")
    if study is not None:
        if study.get("available"):
            segmentation = lookup(results, "http", "segmentation_model")
            label = f"POST {STUDIES_PATH} over HTTP" + (" (with segmentation)" if segmentation else "")
            lines.append(_stat_row(label, study["end_to_end_ms"]))
        else:
            lines.append(f"  {'POST ' + STUDIES_PATH + ' over HTTP':<52} not available ({study['reason']})")
    return lines


def _server_lines(results: dict[str, Any]) -> list[str]:
    """Throughput under concurrent clients, start-up time and the server's resident memory."""
    lines = []
    throughput = lookup(results, "http", "throughput")
    if throughput:
        lines.append("Throughput (single slices, default request, concurrent clients)")
        for clients, entry in throughput.items():
            lines.append(
                _stat_row(
                    f"{clients} client(s): {entry['requests_per_second']:.1f} requests/s, latency",
                    entry["latency_ms"],
                )
            )
    start = lookup(results, "http", "start_to_ready_s")
    if start:
        lines.append(_stat_row("Start to ready", start, "s"))
    memory = lookup(results, "http", "memory")
    if memory:
        lines.append(
            f"Resident memory: {memory['rss_after_start_mib']:.0f} MiB after start, "
            f"{memory['rss_after_requests_mib']:.0f} MiB after {memory['requests']} requests "
            f"({memory['growth_percent']:+.1f} %; {memory['growth_after_settling_percent']:+.1f} % "
            f"from {memory['settled_after_requests']} requests on); "
            f"{memory.get('rss_after_studies_mib', 0):.0f} MiB after the series uploads; server malloc "
            f"settings: {memory.get('malloc_environment') or 'glibc defaults'}"
        )
    return lines


def _verdict_lines(results: dict[str, Any]) -> list[str]:
    """The ratios of medians, then each target with its goal, value and verdict."""
    lines = ["Ratios (of medians)"]
    for name, value in results["ratios"].items():
        lines.append(f"  {name:<52} {'n/a' if value is None else f'{value:.2f}x':>10}")
    lines.append("Targets")
    for target in results["targets"]:
        verdict = (
            "info"
            if target.get("info")
            else {True: "PASS", False: "FAIL", None: "not measured"}[target["pass"]]
        )
        value = target["value"]
        lines.append(
            f"  {target['name']:<32} {target['goal']:<10} {'n/a' if value is None else value:>10}  {verdict:<12} "
            f"{target['note']}"
        )
    return lines


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the results: medians, 95th percentiles, ratios and targets."""
    single = lookup(results, "in_process", "single_slice") or {}
    image = lookup(results, "in_process", "image") or {}
    lines = _header_lines(results)
    lines += ["", f"  {'':<52} {'median':>12} {'p95':>12}"]
    lines += _in_process_slice_lines(single, image)
    lines += _http_slice_lines(results, single)
    lines += _series_lines(results)
    lines += _server_lines(results)
    lines += _verdict_lines(results)
    return "\n".join(lines)
