"""The benchmark runs end to end on a tiny model and writes the results it promises.

Only the shape of the results is checked: timings depend on the machine, so none is asserted.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from bench.client import STUDIES_PATH, HttpBench
from bench.config import BenchConfig
from bench.inputs import build_dicom_series
from bench.run import run
from bench.stats import summarize
from bench.table import format_table
from bench.targets import evaluate_targets
from ml.data.imaging import decode_image
from ml.data.preprocessing import PreprocessConfig
from ml.data.segmentation import SUBTYPES
from ml.model_io import save_bundle
from ml.models.classifier import GRADCAM_LAYERS, build_classifier
from ml.models.unet import build_unet

TARGET_NAMES = [
    "api_slice_p50",
    "api_slice_over_floor",
    "series_end_to_end",
    "optimised_vs_naive",
    "start_to_ready",
    "memory_growth",
]
INFO_NAMES = ["api_slice_segmented_p50", "api_slice_segmented_over_floors"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding one tiny, untrained ``ich-compact`` on 64 x 64 inputs."""
    store = tmp_path_factory.mktemp("bench_store")
    card = {
        "name": "ich-compact",
        "version": "0.0.1",
        "threshold": 0.5,
        "gradcam_layer": GRADCAM_LAYERS["tiny"],
        "preprocessing": PreprocessConfig(image_size=64).to_dict(),
        "input_shape": [64, 64, 1],
    }
    import keras

    keras.utils.set_random_seed(6)
    save_bundle(build_classifier((64, 64, 1), backbone="tiny"), card, store / "ich-compact" / "0.0.1")
    return store


@pytest.fixture(scope="module")
def tiny_seg_store(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier beside a tiny, untrained ``ich-unet`` segmentation model, as the service loads it."""
    import keras

    store = tmp_path_factory.mktemp("bench_seg_store")
    shutil.copytree(tiny_store / "ich-compact", store / "ich-compact")
    card = {
        "kind": "segmentation",
        "name": "ich-unet",
        "version": "0.0.1",
        "preprocessing": PreprocessConfig(image_size=64).to_dict(),
        "input_shape": [64, 64, 1],
        "blood_threshold": 0.5,
        "min_component_px": 4,
        "subtypes": list(SUBTYPES),
        "limitations": ["Tiny untrained segmentation test model."],
    }
    keras.utils.set_random_seed(7)
    save_bundle(build_unet((64, 64, 1), width=4), card, store / "ich-unet" / "0.0.1")
    return store


def assert_stats(stats: dict[str, Any]) -> None:
    assert set(stats) >= {"median", "p95", "mean", "min", "max", "n"}
    assert stats["n"] >= 1
    assert 0 < stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]


@pytest.mark.parametrize("segmentation", [False, True], ids=["classification-only", "with-segmentation"])
def test_quick_run_writes_every_figure(
    segmentation: bool,
    request: pytest.FixtureRequest,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ICH_SEGMENTATION_MODEL", raising=False)
    store: Path = request.getfixturevalue("tiny_seg_store" if segmentation else "tiny_store")
    output = tmp_path / "bench" / "results.json"
    config = BenchConfig(
        model_store=store, data_dir=data_dir, output=output, requests=3, model_name="ich-compact"
    ).as_quick()

    results = run(config, command="python -m bench --quick")

    written = json.loads(output.read_text())
    assert written["command"] == "python -m bench --quick"
    assert written["quick"] is True
    assert written["machine"]["nproc"] >= 1 and written["machine"]["tensorflow"]
    assert written["in_process"]["model"]["name"] == "ich-compact"

    single = written["in_process"]["single_slice"]
    assert_stats(single["end_to_end_ms"])
    assert_stats(single["floor_ms"])
    assert_stats(single["forward_and_gradcam_ms"])
    assert {"decode", "preprocess", "model_and_gradcam", "postprocess", "encode"} <= set(single["stages_ms"])

    series = written["in_process"]["series"]
    assert series["num_slices"] == config.series_slices
    for key in ("decode_ms", "optimised_ms", "naive_ms", "floor_batch_ms"):
        assert_stats(series[key])
    assert series["optimised_slices_per_second"] > 0 and series["naive_slices_per_second"] > 0
    # The naive path is a baseline for timing only if it computes the same thing.
    assert series["agreement"]["max_probability_difference"] < 1e-4
    assert series["agreement"]["max_heatmap_difference"] < 1e-3

    http = written["http"]
    assert http["single_slice"]["request"] == "segment=false (form field)"
    assert http["single_slice"]["segmented_responses"] == 0
    assert_stats(http["single_slice"]["end_to_end_ms"])
    stages = set(http["single_slice"]["server_stages_ms"])
    assert {"decode", "preprocess", "model_and_gradcam", "encode", "storage", "total"} <= stages
    assert "segmentation" not in stages
    assert_stats(http["pdf_ms"])
    assert set(http["throughput"]) == {"1", "4", "8"}
    for entry in http["throughput"].values():
        assert entry["requests_per_second"] > 0
        assert_stats(entry["latency_ms"])
    assert http["start_to_ready_s"]["median"] > 0
    memory = http["memory"]
    assert memory["rss_after_start_mib"] > 0 and memory["rss_after_requests_mib"] > 0
    assert memory["requests"] >= config.memory_requests
    # The server runs with the malloc settings of `make run` and the container (bench.service).
    assert "MALLOC_ARENA_MAX" in memory["malloc_environment"]
    assert isinstance(http["study"]["available"], bool)
    assert http["served_models"]["classification"].startswith("ich-compact/")

    segmented = http["single_slice_with_segmentation"]
    segmentation_floor = written["in_process"]["segmentation_floor"]
    segmented_ratio = written["ratios"]["api_slice_with_segmentation_over_floors"]
    table = format_table(results)
    if segmentation:
        assert http["served_models"]["segmentation"] == "ich-unet/0.0.1"
        assert http["segmentation_model"] == "ich-unet/0.0.1"
        assert segmented["model"] == "ich-unet/0.0.1" and segmented["request"] == "default"
        assert segmented["segmented_responses"] == config.requests
        assert_stats(segmented["end_to_end_ms"])
        assert {"model_and_gradcam", "segmentation", "encode", "total"} <= set(segmented["server_stages_ms"])
        assert segmentation_floor["model"] == "ich-unet/0.0.1"
        assert segmentation_floor["input_shape"] == [1, 64, 64, 1]
        assert_stats(segmentation_floor["floor_ms"])
        assert segmented_ratio is not None and segmented_ratio > 0
        assert [target["name"] for target in written["targets"]] == TARGET_NAMES + INFO_NAMES
        info = written["targets"][len(TARGET_NAMES) :]
        assert all(target["info"] is True and target["pass"] is None for target in info)
        assert info[0]["value"] == segmented["end_to_end_ms"]["median"]
        assert info[1]["value"] == segmented_ratio
        assert "with segmentation (ich-unet/0.0.1" in table and " info " in table
    else:
        assert http["served_models"].get("segmentation") is None
        assert http["segmentation_model"] is None
        assert segmented is None and segmentation_floor is None and segmented_ratio is None
        assert [target["name"] for target in written["targets"]] == TARGET_NAMES
        assert "not measured (the server serves no segmentation model)" in table

    assert all(value is None or value > 0 for value in written["ratios"].values())
    scored = written["targets"][: len(TARGET_NAMES)]
    assert all(target["pass"] in (True, False) and target["info"] is False for target in scored)
    assert "Targets" in table and "QUICK RUN" in table


def test_in_process_only_leaves_http_targets_unmeasured(
    tiny_store: Path, data_dir: Path, tmp_path: Path
) -> None:
    config = BenchConfig(
        model_store=tiny_store,
        data_dir=data_dir,
        output=tmp_path / "results.json",
        skip_http=True,
        model_name="ich-compact",
    ).as_quick()

    results = run(config)

    assert results["http"] is None
    assert results["in_process"]["segmentation_floor"] is None
    assert results["ratios"]["api_slice_with_segmentation_over_floors"] is None
    assert [target["name"] for target in results["targets"]] == TARGET_NAMES
    verdicts = {target["name"]: target["pass"] for target in results["targets"]}
    assert verdicts["api_slice_p50"] is None and verdicts["memory_growth"] is None
    assert verdicts["optimised_vs_naive"] in (True, False)
    assert "not measured" in format_table(results)


def test_series_reads_as_one_series_of_distinct_slices(data_dir: Path) -> None:
    files = build_dicom_series(data_dir, 30)

    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files]
    assert len({dataset.SOPInstanceUID for dataset in datasets}) == 30
    assert len({dataset.SeriesInstanceUID for dataset in datasets}) == 1
    assert [float(dataset.ImagePositionPatient[2]) for dataset in datasets] == [5.0 * i for i in range(30)]
    assert decode_image(files[-1]).format == "dicom"


def test_study_upload_posts_every_file_once() -> None:
    received: list[int] = []
    # The study is a job: the bench waits for it, so that it times the whole analysis.
    waits: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json={"paths": {STUDIES_PATH: {"post": {}}}})
        received.append(request.content.count(b'name="files"'))
        waits.append(request.url.params.get("wait"))
        return httpx.Response(201, json={})

    bench = HttpBench(Path("model_store"), Path("unused"), "ich_key")
    client = httpx.Client(base_url="http://service", transport=httpx.MockTransport(handler))
    series = [b"DICM" + bytes([index]) for index in range(40)]

    assert bench.study_endpoint_available(client)
    elapsed, status = bench.post_study(client, series)

    assert status == 201 and elapsed > 0
    assert received == [40] and waits == ["120"]


def test_summary_statistics() -> None:
    stats = summarize([float(value) for value in range(1, 101)])

    assert stats["median"] == 50.5 and stats["p95"] == pytest.approx(95.05)
    assert stats["n"] == 100 and stats["min"] == 1.0 and stats["max"] == 100.0
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_targets_need_the_measurements() -> None:
    results: dict[str, Any] = {
        "ratios": {"api_slice_over_floor_slice": None, "naive_over_optimised_series": 4.0}
    }

    verdicts = {target["name"]: target["pass"] for target in evaluate_targets(results)}

    assert verdicts["optimised_vs_naive"] is True
    assert verdicts["api_slice_p50"] is None and verdicts["series_end_to_end"] is None
