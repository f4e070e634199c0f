"""The shipped models behind the API: a real labelled slice gets an outline over its bleed, from
the served network by default and from the earlier classifier and U-Net pair when asked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from ml.data.segmentation import load_seg_image, read_bhsd
from ml.evaluation.segmentation import overlap_counts
from ml.model_io import discover_models
from tests.app.conftest import API_KEY

pytestmark = pytest.mark.slow

STORE = Path(__file__).resolve().parents[2] / "model_store"


@pytest.fixture(scope="module")
def shipped_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), model_store=STORE, api_keys=API_KEY, max_upload_mb=5
    )
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client


def test_the_shipped_network_serves_and_the_pair_stays_available(shipped_client: TestClient) -> None:
    ready = shipped_client.get("/readyz").json()
    assert ready["models"]["classification"].startswith("ich-multitask/")
    assert ready["models"]["segmentation"].startswith("ich-multitask/")
    names = {entry["name"] for entry in shipped_client.get("/api/v1/models").json()}
    assert {"ich-multitask", "ich-compact", "ich-unet"} <= names


@pytest.mark.parametrize(("query", "outliner"), [("", "ich-multitask"), ("?model=ich-compact", "ich-unet")])
def test_a_bhsd_slice_gets_a_mask_over_its_labelled_bleed(
    shipped_client: TestClient, data_dir: Path, query: str, outliner: str
) -> None:
    # The held-out slice with the largest labelled bleed, shown in the brain window (both
    # models hold out the same bhsd_seg volumes).
    served = discover_models(STORE)["ich-unet"][-1]
    manifest = json.loads((served / "split_manifest.json").read_text())
    test_volumes = set(manifest["bhsd_seg_volumes"]["test"])
    samples = [s for s in read_bhsd(data_dir) if s.group in test_volumes]
    masks = {s.path: cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE) for s in samples}
    sample = max(samples, key=lambda s: int((masks[s.path] > 0).sum()))
    ok, png = cv2.imencode(".png", load_seg_image(sample))
    assert ok
    response = shipped_client.post(
        f"/api/v1/predictions{query}", files={"file": ("slice.png", png.tobytes(), "image/png")}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    segmentation = body["segmentation"]
    assert segmentation["model"]["name"] == outliner
    mask_png = shipped_client.get(body["links"]["mask"]).content
    predicted = cv2.imdecode(np.frombuffer(mask_png, np.uint8), cv2.IMREAD_UNCHANGED)
    truth = masks[sample.path]
    assert predicted.shape == truth.shape
    intersection, predicted_px, true_px = overlap_counts(predicted > 0, truth > 0)
    # The outline lies over the labelled bleed: most of it inside, and a fair share of it found.
    assert intersection > 0
    assert intersection / predicted_px > 0.5
    assert 2 * intersection / (predicted_px + true_px) > 0.3
    assert segmentation["blood_area_px"] == predicted_px
