"""A multitask bundle served as one model: probability, Grad-CAM and outlines from one pass.

The store (``multitask_model_store``) holds the tiny multitask model (the default here), the tiny
classifier and the tiny segmentation model. The segmentation model outlines what the classifier
analyses, never what the multitask model analyses: those outlines come from its own heads.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader

from app.core.config import Settings
from app.main import create_app
from ml.data.segmentation import SUBTYPE_COLOURS, SUBTYPES
from tests.app.conftest import API_KEY, DATA_DIR, OpenApp, tiny_multitask_card
from tests.support.dicom_series import patient_jpegs, series_from_jpegs

MULTITASK = {"name": "ich-multitask", "version": "0.0.1"}


@pytest.fixture
def multitask_settings(tmp_path: Path, multitask_model_store: Path, database_url: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        model_store=multitask_model_store,
        default_model="ich-multitask",
        api_keys=API_KEY,
        max_upload_mb=2,
    )


@pytest.fixture
def separate_segmenter_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any call of a separate segmentation model fails the test."""
    from app.services.inference import SliceSegmenter

    def forbidden(self: SliceSegmenter, batch: np.ndarray, geometries: list[Any]) -> list[Any]:
        raise AssertionError(f"The segmentation model {self.name} ran for a multitask model.")

    monkeypatch.setattr(SliceSegmenter, "segment", forbidden)


@pytest.fixture
def multitask_client(multitask_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(multitask_settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client


@pytest.fixture(scope="module")
def series() -> list[tuple[str, bytes]]:
    return series_from_jpegs(patient_jpegs(DATA_DIR, "050")[10:13])


def post(client: TestClient, data: bytes, query: str = "", **fields: str) -> dict[str, Any]:
    response = client.post(f"/api/v1/predictions{query}", files={"file": ("slice.bin", data)}, data=fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def png_text(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as picture:
        return dict(picture.text)  # type: ignore[attr-defined]


def assert_outlines_of_the_multitask_model(segmentation: dict[str, Any]) -> None:
    assert segmentation["model"] == MULTITASK
    assert list(segmentation["subtypes"]) == list(SUBTYPES)
    for name, entry in segmentation["subtypes"].items():
        assert 0.0 <= entry["probability"] <= 1.0 and entry["area_px"] >= 0
        assert entry["colour"] == "#{:02x}{:02x}{:02x}".format(*SUBTYPE_COLOURS[name])
    assert segmentation["blood_area_px"] == sum(e["area_px"] for e in segmentation["subtypes"].values())


@pytest.mark.usefixtures("separate_segmenter_forbidden")
def test_a_slice_gets_probability_grad_cam_and_outlines_from_the_multitask_model(
    multitask_client: TestClient, png_bytes: bytes
) -> None:
    body = post(multitask_client, png_bytes)

    assert body["model"] == MULTITASK
    assert 0.0 <= body["probability"] <= 1.0 and body["threshold"] == 0.5
    assert body["label"] in ("hemorrhage", "no_hemorrhage", "out_of_scope")
    overlay = multitask_client.get(body["links"]["overlay"])
    assert overlay.status_code == 200 and "ich-multitask 0.0.1" in png_text(overlay.content)["Software"]
    heatmap = decode(multitask_client.get(body["links"]["heatmap"]).content)
    original = decode(multitask_client.get(body["links"]["original"]).content)
    assert heatmap.shape == original.shape[:2]

    segmentation = body["segmentation"]
    assert_outlines_of_the_multitask_model(segmentation)
    mask_png = multitask_client.get(segmentation["links"]["mask"]).content
    mask = decode(mask_png)
    assert mask.shape == original.shape[:2]
    counts = np.bincount(mask.ravel(), minlength=len(SUBTYPES) + 1)
    assert [int(counts[k + 1]) for k in range(len(SUBTYPES))] == [
        segmentation["subtypes"][name]["area_px"] for name in SUBTYPES
    ]
    assert "ich-multitask 0.0.1" in png_text(mask_png)["Software"]
    assert multitask_client.get(segmentation["links"]["contours"]).status_code == 200
    # The outline time is the post-processing alone: the heads ran in the model's pass.
    assert body["timings_ms"]["segmentation"] >= 0.0 and body["timings_ms"]["model_and_gradcam"] > 0.0
    assert multitask_client.get(body["links"]["self"]).json()["segmentation"] == segmentation


def test_the_separate_segmentation_model_still_outlines_for_other_classifiers(
    multitask_client: TestClient, png_bytes: bytes
) -> None:
    outlined_by_itself = post(multitask_client, png_bytes)
    outlined_by_unet = post(multitask_client, png_bytes, "?model=ich-compact")

    assert outlined_by_itself["segmentation"]["model"] == MULTITASK
    assert outlined_by_unet["model"] == {"name": "ich-compact", "version": "0.0.2"}
    assert outlined_by_unet["segmentation"]["model"] == {"name": "ich-unet", "version": "0.0.1"}


@pytest.mark.usefixtures("separate_segmenter_forbidden")
@pytest.mark.parametrize(("query", "fields"), [("?segment=false", {}), ("", {"segment": "false"})])
def test_segment_false_skips_the_multitask_outlines(
    multitask_client: TestClient, png_bytes: bytes, query: str, fields: dict[str, str]
) -> None:
    body = post(multitask_client, png_bytes, query, **fields)
    assert body["model"] == MULTITASK and 0.0 <= body["probability"] <= 1.0
    assert body["segmentation"] is None
    assert body["links"]["mask"] is None and body["links"]["contours"] is None
    assert body["links"]["overlay"] and body["links"]["heatmap"]
    assert "segmentation" not in body["timings_ms"]


@pytest.mark.usefixtures("separate_segmenter_forbidden")
def test_a_study_is_decided_and_outlined_by_the_multitask_model(
    multitask_client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    response = multitask_client.post("/api/v1/studies?wait=120", files=[("files", item) for item in series])
    assert response.status_code == 201, response.text
    body = response.json()

    assert body["model"] == MULTITASK and body["aggregation"] == "max"
    assert body["probability"] == pytest.approx(max(item["probability"] for item in body["slices"]), abs=1e-6)
    study = body["segmentation"]
    assert study["model"] == MULTITASK and study["volume_ml"] is not None
    assert study["blood_area_px"] == sum(item["segmentation"]["blood_area_px"] for item in body["slices"])
    for item in body["slices"]:
        assert_outlines_of_the_multitask_model(item["segmentation"])
        assert multitask_client.get(item["links"]["overlay"]).status_code == 200
    mask = multitask_client.get(body["slices"][0]["segmentation"]["links"]["mask"])
    assert mask.status_code == 200 and "ich-multitask 0.0.1" in png_text(mask.content)["Software"]
    assert body["timings_ms"]["segmentation"] >= 0.0

    report = multitask_client.get(body["links"]["report"])
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(report.content)).pages)
    assert "Segmentation ich-multitask 0.0.1" in text and "Not for clinical use" in text

    without = multitask_client.post(
        "/api/v1/studies?segment=false&wait=120", files=[("files", item) for item in series]
    ).json()
    assert without["segmentation"] is None and all(item["segmentation"] is None for item in without["slices"])
    assert "segmentation" not in without["timings_ms"]


def test_models_listing_readiness_and_card(multitask_client: TestClient) -> None:
    models = multitask_client.get("/api/v1/models").json()
    assert [(m["name"], m["kind"], m["default"]) for m in models] == [
        ("ich-compact", "classification", False),
        ("ich-multitask", "multitask", True),
        ("ich-unet", "segmentation", True),
    ]
    ready = multitask_client.get("/readyz").json()
    assert ready["models"] == {"classification": "ich-multitask/0.0.1", "segmentation": "ich-multitask/0.0.1"}
    card = multitask_client.get("/api/v1/models/ich-multitask/0.0.1/card").json()
    assert card == json.loads(json.dumps(tiny_multitask_card()))
    missing = multitask_client.get("/api/v1/models/ich-multitask/9.9.9/card")
    assert missing.status_code == 404 and "no version '9.9.9'" in missing.json()["detail"]


def test_the_model_page_shows_the_multitask_card_and_its_outlines(
    multitask_model_store: Path, open_app: OpenApp
) -> None:
    with open_app(multitask_model_store, "ich-multitask") as client:
        page = client.get("/model")
    assert page.status_code == 200
    html = page.text
    assert "Model: ich-multitask" in html and "Tiny untrained multitask test model." in html
    assert "data-outline-model" in html and "The same model, in the same pass, outlines" in html
    assert "the mask head of the classifier (ich-multitask 0.0.1)" in html
    assert "ich-multitask 0.0.1 (serves uploads and outlines them)" in html
    assert "ich-unet 0.0.1 (outlines analyses by other models)" in html
    # Its card has no outline criterion in its study rule.
    assert "data-outline-criterion" not in html


def test_the_registry_finds_the_multitask_card_for_its_outline_records(multitask_model_store: Path) -> None:
    from app.services.registry import ModelRegistry

    registry = ModelRegistry.from_store(multitask_model_store, "ich-multitask", "ich-unet")
    classifier = registry.get("ich-multitask", "0.0.1")
    assert classifier.kind == "multitask" and classifier.outlines_itself
    assert registry.outliner() is classifier
    assert registry.outliner(registry.get("ich-compact")) is registry.segmenter()
    card = registry.card("ich-multitask", "0.0.1")
    assert card["kind"] == "multitask" and card["blood_threshold"] == 0.5
    assert registry.loaded_card("ich-multitask", "0.0.1") is card
    assert registry.outline_card({"model": MULTITASK, "blood_area_px": 3}) is card
    assert registry.outline_card({"model": {"name": "ich-multitask", "version": "9"}}) == {}


def test_one_pass_outlines_as_the_same_network_run_as_a_segmentation_model(
    multitask_model_store: Path, png_bytes: bytes
) -> None:
    from app.services.imaging import decode_upload
    from app.services.inference import SliceClassifier, SliceSegmenter
    from ml.data.preprocessing import preprocess
    from ml.model_io import load_bundle
    from ml.segmenter import Segmenter

    classifier = SliceClassifier(load_bundle(multitask_model_store / "ich-multitask" / "0.0.1"))
    decoded = decode_upload(png_bytes, 10_000_000)
    # The same (folded) network behind the segmentation model's code path.
    as_segmenter = SliceSegmenter(Segmenter(classifier.model, classifier.card), Path("unused"))

    own = classifier.predict(decoded)
    separate = classifier.predict_many([decoded], as_segmenter, segment=False)[0]
    prepared = preprocess(decoded.pixels, classifier.config)
    expected = as_segmenter.segment(prepared.image[None], [prepared.geometry])[0]

    assert own.segmentation is not None and separate.segmentation is None
    assert own.probability == pytest.approx(separate.probability, abs=1e-6)
    np.testing.assert_allclose(own.heatmap, separate.heatmap, atol=1e-5)
    assert own.segmentation.model_name == "ich-multitask"
    for name, value in expected.result.subtype_probabilities.items():
        assert own.segmentation.result.subtype_probabilities[name] == pytest.approx(value, abs=1e-4)
    differing = np.mean(own.segmentation.result.class_map != expected.result.class_map)
    assert differing < 1e-3


def test_a_multitask_card_without_outline_fields_is_not_loaded(
    multitask_model_store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.services.registry import ModelRegistry

    store = tmp_path / "store"
    bundle = store / "ich-multitask" / "0.0.2"
    bundle.mkdir(parents=True)
    (bundle / "model.keras").write_bytes(
        (multitask_model_store / "ich-multitask/0.0.1/model.keras").read_bytes()
    )
    card = tiny_multitask_card(version="0.0.2")
    del card["blood_threshold"]
    (bundle / "model_card.json").write_text(json.dumps(card), encoding="utf-8")

    with caplog.at_level("ERROR"):
        registry = ModelRegistry.from_store(store, "ich-multitask")

    assert not registry.ready
    assert "lacks the field(s) ['blood_threshold']" in caplog.text


@pytest.fixture(scope="module")
def outline_rule_store(multitask_model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny multitask model with a study rule that only its outline criterion can meet: every
    pixel counts as outlined blood (blood threshold 0), and no probability reaches 1.0."""
    import shutil

    store = tmp_path_factory.mktemp("outline_rule_store")
    target = store / "ich-multitask" / "0.0.1"
    shutil.copytree(multitask_model_store / "ich-multitask" / "0.0.1", target)
    card = json.loads((target / "model_card.json").read_text(encoding="utf-8"))
    card.update(blood_threshold=0.0, min_component_px=1, study_threshold=1.0, study_outline_px=3 * 64 * 64)
    (target / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    return store


def test_the_outline_criterion_flags_a_study_the_probability_does_not(
    outline_rule_store: Path, tmp_path: Path, series: list[tuple[str, bytes]]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        model_store=outline_rule_store,
        default_model="ich-multitask",
        api_keys=API_KEY,
        max_upload_mb=2,
    )
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        files = [("files", item) for item in series]
        body = client.post("/api/v1/studies?wait=120", files=files).json()
        # Three slices on the 64 x 64 model grid, every pixel outlined (the JPEGs are 512 x 512).
        assert body["criteria"] == {
            "flagged_by": ["outline"],
            "outline_threshold_px": 12288,
            "outline_px": 12288,
        }
        assert body["probability"] < body["threshold"] and body["label"] == "hemorrhage"
        report = client.get(body["links"]["report"])
        text = " ".join(
            " ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(report.content)).pages
        )
        assert "flagged by its outline: 12,288 outlined pixels of blood" in text
        assert "or when the outline marks at least 12,288 pixels of blood across its slices" in text

        # Without outlines the criterion cannot apply, and the study says so.
        without = client.post("/api/v1/studies?segment=false&wait=120", files=files).json()
        assert without["criteria"] == {"flagged_by": [], "outline_threshold_px": 12288, "outline_px": None}
        assert without["label"] == "no_hemorrhage"
        report = client.get(without["links"]["report"])
        text = " ".join(
            " ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(report.content)).pages
        )
        assert "The outline criterion could not apply" in text

    # One pixel more than the series holds: neither criterion flags it.
    card_path = outline_rule_store / "ich-multitask" / "0.0.1" / "model_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card_path.write_text(json.dumps({**card, "study_outline_px": 12289}), encoding="utf-8")
    try:
        with TestClient(create_app(settings)) as client:
            client.headers["Authorization"] = f"Bearer {API_KEY}"
            body = client.post("/api/v1/studies?wait=120", files=files).json()
    finally:
        card_path.write_text(json.dumps(card), encoding="utf-8")
    assert body["criteria"] == {"flagged_by": [], "outline_threshold_px": 12289, "outline_px": 12288}
    assert body["label"] == "no_hemorrhage"


def test_the_model_page_states_the_outline_criterion(outline_rule_store: Path, open_app: OpenApp) -> None:
    with open_app(outline_rule_store, "ich-multitask") as client:
        html = client.get("/model").text
    assert "data-outline-criterion" in html
    assert "reaches 12,288 pixels of its 64 x 64 grid of the head" in html


def test_a_multitask_study_without_the_outline_criterion_records_only_the_probability(
    multitask_client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    body = multitask_client.post(
        "/api/v1/studies?wait=120", files=[("files", item) for item in series]
    ).json()
    criteria = body["criteria"]
    assert criteria["outline_threshold_px"] is None and criteria["outline_px"] >= 0
    assert criteria["flagged_by"] == (["probability"] if body["probability"] >= body["threshold"] else [])
    assert body["label"] == ("hemorrhage" if criteria["flagged_by"] else "no_hemorrhage")
