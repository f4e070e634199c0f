"""Image work spread over the CPU's cores gives the same results, in the same order, as one by one."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from app.services import parallel
from app.services.analysis import slice_image_jobs
from app.services.imaging import decode_upload
from app.services.inference import SliceClassifier, SliceSegmenter
from app.services.parallel import parallel_map, run_all
from ml.data.preprocessing import PreprocessConfig
from ml.model_io import load_bundle
from ml.models.unet import build_unet
from ml.segmenter import Segmenter
from tests.app.conftest import tiny_seg_card


def test_results_come_back_in_order_and_use_more_than_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "_WORKERS", 2)
    barrier = threading.Barrier(2, timeout=10)

    def square(value: int) -> tuple[int, str]:
        if value < 2:
            barrier.wait()  # passes only when two items run at the same time
        return value * value, threading.current_thread().name

    results = parallel_map(square, range(8))

    assert [value for value, _ in results] == [value * value for value in range(8)]
    assert len({name for _, name in results[:2]}) == 2


def test_one_item_or_one_core_runs_in_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    caller = threading.current_thread().name
    assert parallel_map(lambda _: threading.current_thread().name, [0]) == [caller]
    monkeypatch.setattr(parallel, "_WORKERS", 1)
    assert parallel_map(lambda _: threading.current_thread().name, range(3)) == [caller] * 3


def test_an_error_in_one_job_reaches_the_caller() -> None:
    def fail() -> int:
        raise ValueError("broken image")

    with pytest.raises(ValueError, match="broken image"):
        run_all([lambda: 1, fail, lambda: 3])


def _slices() -> list[bytes]:
    rng = np.random.default_rng(7)
    images = []
    for index in range(5):
        image = np.zeros((180 + 10 * index, 240), np.uint8)
        cv2.ellipse(image, (120, 95), (90, 80), 0, 0, 360, 90, -1)
        cv2.ellipse(image, (120, 95), (90, 80), 0, 0, 360, 250, 6)
        image = cv2.add(image, rng.integers(0, 30, image.shape, dtype=np.uint8))
        ok, png = cv2.imencode(".png", image)
        assert ok
        images.append(png.tobytes())
    return images


def test_a_batch_analysed_side_by_side_matches_one_slice_at_a_time(
    model_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "_WORKERS", 2)
    classifier = SliceClassifier(load_bundle(model_store / "ich-compact" / "0.0.2"))
    keras.utils.set_random_seed(5)
    card = {**tiny_seg_card(version="0.0.5"), "preprocessing": PreprocessConfig(image_size=64).to_dict()}
    segmenter = SliceSegmenter(Segmenter(build_unet((64, 64, 1), width=4), card), Path("unused"))
    decoded = [decode_upload(data, 10_000_000) for data in _slices()]

    together = classifier.predict_many(decoded, segmenter)
    alone = [classifier.predict(item, segmenter) for item in decoded]

    for batched, single in zip(together, alone, strict=True):
        assert batched.probability == pytest.approx(single.probability, abs=1e-5)
        np.testing.assert_allclose(batched.heatmap, single.heatmap, atol=1e-4)
        assert batched.overlay.shape == single.overlay.shape
        assert batched.segmentation is not None and single.segmentation is not None
        np.testing.assert_array_equal(
            batched.segmentation.result.class_map, single.segmentation.result.class_map
        )
    assert [item.decoded.pixels.shape for item in together] == [item.pixels.shape for item in decoded]

    jobs = [slice_image_jobs(result, heatmap=True) for result in together]
    files = run_all([job for kinds in jobs for job in kinds.values()])
    serial = [job() for kinds in jobs for job in kinds.values()]
    assert files == serial
    assert all(data.startswith(b"\x89PNG") for data in files)
    assert list(jobs[0]) == ["original", "overlay", "heatmap", "mask", "contours"]
