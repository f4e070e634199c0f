"""Outlines of haemorrhage by subtype, served beside the classifier: API, files, studies, report, pages.

The segmentation model is a tiny untrained U-Net (``seg_model_store``): its outlines are arbitrary,
so the tests check shapes, sizes, orientation and that the numbers agree with the stored masks.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader

from app.core.config import Settings
from app.main import create_app
from app.services.segmentation import POINTING_GAME_POOR, OutlineCard, help_sentences, slice_spacing_mm
from ml.data.segmentation import SUBTYPE_COLOURS, SUBTYPES
from tests.app.conftest import API_KEY, DATA_DIR, OpenApp, tiny_seg_card
from tests.support.dicom_series import ct_slice, patient_jpegs, series_from_jpegs

SPACING_MM = 0.45


@pytest.fixture
def seg_settings(tmp_path: Path, seg_model_store: Path, database_url: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        model_store=seg_model_store,
        default_model="ich-compact",
        api_keys=API_KEY,
        max_upload_mb=2,
    )


@pytest.fixture
def seg_client(seg_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(seg_settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        yield client


@pytest.fixture(scope="module")
def wide_png(png_bytes: bytes) -> bytes:
    """A head CT slice on the left of a black 300 x 200 (width x height) canvas."""
    head = cv2.imdecode(np.frombuffer(png_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)
    canvas = np.zeros((200, 300), np.uint8)
    canvas[:, :200] = cv2.resize(head, (200, 200), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", canvas)
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="module")
def series() -> list[tuple[str, bytes]]:
    return series_from_jpegs(patient_jpegs(DATA_DIR, "050")[10:14])


def post(client: TestClient, data: bytes, query: str = "", **fields: str) -> dict[str, object]:
    response = client.post(f"/api/v1/predictions{query}", files={"file": ("slice.bin", data)}, data=fields)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def post_study(client: TestClient, files: list[tuple[str, bytes]]) -> dict[str, object]:
    response = client.post("/api/v1/studies?wait=120", files=[("files", item) for item in files])
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def png_header(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR: colour type 0 is grey, 6 is RGBA."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    return data[24], data[25]


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def pdf_text(data: bytes) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_prediction_carries_outlines_by_subtype(seg_client: TestClient, wide_png: bytes) -> None:
    body = post(seg_client, wide_png)
    segmentation = body["segmentation"]
    assert isinstance(segmentation, dict)
    assert segmentation["model"] == {"name": "ich-unet", "version": "0.0.1"}
    assert list(segmentation["subtypes"]) == list(SUBTYPES)
    for name, entry in segmentation["subtypes"].items():
        assert 0.0 <= entry["probability"] <= 1.0
        assert entry["area_px"] >= 0 and entry["area_mm2"] is None
        assert entry["colour"] == "#{:02x}{:02x}{:02x}".format(*SUBTYPE_COLOURS[name])
    assert segmentation["blood_area_px"] == sum(e["area_px"] for e in segmentation["subtypes"].values())
    assert segmentation["blood_area_mm2"] is None
    assert body["timings_ms"]["segmentation"] >= 0.0  # type: ignore[index]

    assert body["links"]["mask"] == segmentation["links"]["mask"]  # type: ignore[index]
    assert body["links"]["contours"] == segmentation["links"]["contours"]  # type: ignore[index]
    mask_png = seg_client.get(segmentation["links"]["mask"])
    assert mask_png.status_code == 200 and mask_png.headers["content-type"] == "image/png"
    assert png_header(mask_png.content) == (8, 0)
    mask = decode(mask_png.content)
    # The input image's size and orientation: 200 rows, 300 columns, the head on the left.
    assert mask.shape == (200, 300) and mask.dtype == np.uint8
    assert int(mask.max()) <= len(SUBTYPES)
    assert mask[:, :200].any() and not mask[:, 210:].any()
    counts = np.bincount(mask.ravel(), minlength=len(SUBTYPES) + 1)
    assert [int(counts[k + 1]) for k in range(len(SUBTYPES))] == [
        segmentation["subtypes"][name]["area_px"] for name in SUBTYPES
    ]

    contours_png = seg_client.get(segmentation["links"]["contours"]).content
    assert png_header(contours_png) == (8, 6)
    contours = cv2.cvtColor(decode(contours_png), cv2.COLOR_BGRA2RGBA)
    assert contours.shape == (200, 300, 4)
    drawn = contours[:, :, 3] > 0
    assert drawn.any() and not (drawn & (mask == 0)).any()
    # Every outline pixel has the colour of the subtype it outlines.
    rows, columns = np.nonzero(drawn)
    for row, column in list(zip(rows, columns, strict=True))[::97]:
        expected = SUBTYPE_COLOURS[SUBTYPES[mask[row, column] - 1]]
        assert tuple(int(v) for v in contours[row, column, :3]) == expected

    # Both images name the model that drew them and say they are not for clinical use.
    for data in (mask_png.content, contours_png):
        with Image.open(io.BytesIO(data)) as picture:
            text = dict(picture.text)  # type: ignore[attr-defined]
        assert "ich-unet 0.0.1" in text["Software"] and "Not for clinical use" in text["Disclaimer"]

    heatmap_png = seg_client.get(body["links"]["heatmap"]).content  # type: ignore[index]
    assert png_header(heatmap_png) == (8, 0)
    assert decode(heatmap_png).shape == (200, 300)

    again = seg_client.get(body["links"]["self"]).json()  # type: ignore[index]
    assert again["segmentation"] == segmentation


@pytest.mark.data
def test_dicom_pixel_spacing_gives_square_millimetres(seg_client: TestClient) -> None:
    grey = cv2.imread(str(patient_jpegs(DATA_DIR, "050")[12]), cv2.IMREAD_GRAYSCALE)
    data = ct_slice(
        grey, 0.0, 1, pydicom.uid.generate_uid(), pydicom.uid.generate_uid(), pixel_spacing=SPACING_MM
    )
    segmentation = post(seg_client, data)["segmentation"]
    assert isinstance(segmentation, dict)
    for entry in segmentation["subtypes"].values():
        assert entry["area_mm2"] == pytest.approx(entry["area_px"] * SPACING_MM**2, abs=0.01)
    assert segmentation["blood_area_mm2"] == pytest.approx(
        segmentation["blood_area_px"] * SPACING_MM**2, abs=0.01
    )
    assert segmentation["blood_area_px"] > 0
    mask = decode(seg_client.get(segmentation["links"]["mask"]).content)
    assert mask.shape == grey.shape


@pytest.mark.parametrize(("query", "fields"), [("?segment=false", {}), ("", {"segment": "false"})])
def test_segment_false_skips_the_outlines(
    seg_client: TestClient, png_bytes: bytes, query: str, fields: dict[str, str]
) -> None:
    body = post(seg_client, png_bytes, query, **fields)
    assert body["segmentation"] is None
    assert body["links"]["mask"] is None and body["links"]["contours"] is None  # type: ignore[index]
    assert "segmentation" not in body["timings_ms"]  # type: ignore[operator]
    missing = seg_client.get(f"{body['links']['self']}/mask.png")  # type: ignore[index]
    assert missing.status_code == 404 and "has no mask.png" in missing.json()["detail"]
    refused = seg_client.post("/api/v1/predictions?segment=perhaps", files={"file": ("a.png", png_bytes)})
    assert (
        refused.status_code == 422 and "segment: Input should be a valid boolean" in refused.json()["detail"]
    )


def test_outlines_survive_a_restart_and_go_with_the_prediction(
    seg_settings: Settings, png_bytes: bytes
) -> None:
    with TestClient(create_app(seg_settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        body = post(client, png_bytes)
        mask = client.get(body["segmentation"]["links"]["mask"]).content  # type: ignore[index]
    with TestClient(create_app(seg_settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        again = client.get(body["links"]["self"]).json()  # type: ignore[index]
        assert again["segmentation"] == body["segmentation"]
        assert client.get(again["segmentation"]["links"]["mask"]).content == mask
        folder = seg_settings.resolved_storage_dir / "predictions" / str(body["id"])
        assert (folder / "mask.png").is_file() and (folder / "contours.png").is_file()
        assert client.delete(body["links"]["self"]).status_code == 204  # type: ignore[index]
        assert not folder.exists()
        assert client.get(again["segmentation"]["links"]["contours"]).status_code == 404


def test_models_listing_readiness_and_card(seg_client: TestClient) -> None:
    ready = seg_client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["models"] == {"classification": "ich-compact/0.0.2", "segmentation": "ich-unet/0.0.1"}
    models = seg_client.get("/api/v1/models").json()
    assert [(m["name"], m["kind"], m["default"]) for m in models] == [
        ("ich-compact", "classification", True),
        ("ich-unet", "segmentation", True),
    ]
    card = seg_client.get("/api/v1/models/ich-unet/0.0.1/card").json()
    assert card["kind"] == "segmentation" and card["blood_threshold"] == 0.5
    assert seg_client.get("/api/v1/models/ich-unet/9.9.9/card").status_code == 404


def test_segmentation_bundles_are_not_loaded_as_classifiers(
    seg_model_store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.services.registry import ModelRegistry

    with caplog.at_level("INFO"):
        registry = ModelRegistry.from_store(seg_model_store, "ich-compact", segmentation_name=None)
    assert registry.segmenter() is None
    assert [entry["name"] for entry in registry.describe()] == ["ich-compact"]
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]


def test_study_volume_by_voxels_and_abc2(seg_client: TestClient, series: list[tuple[str, bytes]]) -> None:
    body = post_study(seg_client, series)
    study = body["segmentation"]
    assert isinstance(study, dict)
    assert study["model"] == {"name": "ich-unet", "version": "0.0.1"}
    assert study["pixel_spacing_mm"] == [SPACING_MM, SPACING_MM]
    assert study["slice_spacing_mm"] == 5.0 and study["slice_spacing_source"] == "positions"
    slices = body["slices"]
    assert isinstance(slices, list)
    total_px = sum(item["segmentation"]["blood_area_px"] for item in slices)
    assert total_px == study["blood_area_px"] > 0
    assert study["volume_ml"] == pytest.approx(total_px * SPACING_MM**2 * 5.0 / 1000.0, rel=1e-3)
    assert sum(entry["volume_ml"] for entry in study["subtypes"].values()) == pytest.approx(
        study["volume_ml"], rel=1e-3
    )
    assert study["volume_unavailable_reason"] is None
    assert set(study["abc2"]) == {"volume_ml", "a_mm", "b_mm", "c_mm"} and study["abc2"]["volume_ml"] > 0
    for item in slices:
        for entry in item["segmentation"]["subtypes"].values():
            assert entry["area_mm2"] == pytest.approx(entry["area_px"] * SPACING_MM**2, abs=0.01)
    mask = decode(seg_client.get(slices[0]["segmentation"]["links"]["mask"]).content)
    rows, columns = pydicom.dcmread(io.BytesIO(series[0][1])).pixel_array.shape
    assert mask.shape == (rows, columns)
    assert seg_client.get(slices[-1]["segmentation"]["links"]["contours"]).status_code == 200
    assert body["timings_ms"]["segmentation"] >= 0.0  # type: ignore[index]
    assert seg_client.get(body["links"]["self"]).json() == body  # type: ignore[index]

    text = pdf_text(seg_client.get(body["links"]["report"]).content)  # type: ignore[index]
    assert "ABC/2" in text and "voxel counting" in text
    for name in ("Epidural", "Intraparenchymal", "Intraventricular", "Subarachnoid", "Subdural"):
        assert name in text
    assert "Segmentation ich-unet 0.0.1" in text and "Not for clinical use" in text


def without(files: list[tuple[str, bytes]], *keywords: str) -> list[tuple[str, bytes]]:
    result = []
    for name, data in files:
        dataset = pydicom.dcmread(io.BytesIO(data))
        for keyword in keywords:
            delattr(dataset, keyword)
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        result.append((name, buffer.getvalue()))
    return result


def test_study_without_pixel_spacing_says_why(
    seg_client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    study = post_study(seg_client, without(series, "PixelSpacing"))["segmentation"]
    assert isinstance(study, dict)
    assert study["volume_ml"] is None and study["abc2"] is None
    assert "pixel spacing" in study["volume_unavailable_reason"]
    assert all(entry["volume_ml"] is None for entry in study["subtypes"].values())


def test_study_without_positions_uses_the_slice_thickness_or_says_why(
    seg_client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    study = post_study(seg_client, without(series, "ImagePositionPatient"))["segmentation"]
    assert isinstance(study, dict)
    assert study["slice_spacing_source"] == "slice_thickness" and study["slice_spacing_mm"] == 5.0
    assert study["volume_ml"] is not None
    study = post_study(seg_client, without(series, "ImagePositionPatient", "SliceThickness"))["segmentation"]
    assert isinstance(study, dict)
    assert study["volume_ml"] is None and "distance between slices" in study["volume_unavailable_reason"]


def test_slice_report_lists_the_subtypes(seg_client: TestClient, png_bytes: bytes) -> None:
    body = post(seg_client, png_bytes, patient_name="Outline Patient")
    report = seg_client.get(body["links"]["report"])  # type: ignore[index]
    assert report.status_code == 200
    text = pdf_text(report.content)
    assert "Outlines of possible haemorrhage by subtype" in text
    for name in ("Epidural", "Intraparenchymal", "Intraventricular", "Subarachnoid", "Subdural"):
        assert name in text
    assert "Outlined area" in text and "px" in text
    assert "52 labelled slices" in text and "Dice of 0.42" in text
    reader = PdfReader(io.BytesIO(report.content))
    for page in reader.pages:
        page_text = page.extract_text()
        assert "Not for clinical use" in page_text
        assert "ich-compact 0.0.2" in page_text and "Segmentation ich-unet 0.0.1" in page_text


def test_without_a_segmentation_model_studies_have_none(
    client: TestClient, series: list[tuple[str, bytes]]
) -> None:
    body = post_study(client, series[:2])
    assert body["segmentation"] is None
    assert all(item["segmentation"] is None for item in body["slices"])  # type: ignore[union-attr]
    assert "segmentation" not in body["timings_ms"]  # type: ignore[operator]
    assert client.get(f"{body['links']['self']}/mask_000.png").status_code == 404  # type: ignore[index]


@pytest.fixture
def open_pages(seg_model_store: Path, open_app: OpenApp) -> Iterator[TestClient]:
    with open_app(seg_model_store, "ich-compact") as client:
        yield client


def test_result_and_study_pages_show_outlines_legend_and_help(
    open_pages: TestClient, png_bytes: bytes, series: list[tuple[str, bytes]]
) -> None:
    body = post(open_pages, png_bytes)
    page = open_pages.get(f"/predictions/{body['id']}")
    assert page.status_code == 200
    html = page.text
    assert 'id="contours-image"' in html and f"/predictions/{body['id']}/contours.png" in html
    assert 'id="contours-toggle"' in html and "Show outlines" in html
    for name in SUBTYPES:
        assert f'data-subtype="{name}"' in html
        assert 'fill="#{:02x}{:02x}{:02x}"'.format(*SUBTYPE_COLOURS[name]) in html
    assert "52 labelled slices" in html and "Dice of 0.42 (95% CI 0.31 to 0.55)" in html
    assert "only 50%" in html and "often does not point at the bleed" in html
    assert " style=" not in html and "<style" not in html and "<script>" not in html
    assert open_pages.get(f"/predictions/{body['id']}/contours.png").headers["content-type"] == "image/png"

    model_page = open_pages.get("/model").text
    assert "data-outline-model" in model_page and "Tiny untrained segmentation test model." in model_page
    assert "often does not point at the bleed" in model_page

    study = post_study(open_pages, series)
    study_page = open_pages.get(f"/studies/{study['id']}").text
    assert "data-volume>" in study_page and "data-abc2>" in study_page and "ABC/2" in study_page
    assert 'data-contours="/studies/' in study_page and "data-scroller-contours" in study_page
    assert " style=" not in study_page


def test_help_follows_the_card() -> None:
    card = tiny_seg_card()
    sentences = " ".join(help_sentences(card))
    assert "ich-unet 0.0.1" in sentences and "52 labelled slices" in sentences and "6 of them" in sentences
    assert "often does not point at the bleed" in sentences
    card["pointing_game"] = {"test_volumes": {"slices": 20, "hit_rate": POINTING_GAME_POOR + 0.05}}
    sentences = " ".join(help_sentences(card))
    assert "often does not point" not in sentences and "85% of 20 test slices" in sentences
    bare = " ".join(help_sentences({"name": "x", "version": "1"}))
    assert "not been measured" in bare and "small number of slices" in bare


def test_help_reads_what_a_card_says_and_passes_over_what_it_garbles() -> None:
    card = tiny_seg_card()
    card["training"] = {
        "counts": {"bhsd_train": {"slices": "40"}, "bhsd_validation": {"slices": 6}, "bhsd_test": [6]}
    }
    card["metrics"] = {
        "test": {"segmentation": {"any_blood": {"dice": {"value": 0.42, "ci95": [0.31, None]}}}}
    }
    card["pointing_game"] = {
        "test_volumes": {"slices": 6, "hit_rate": float("nan")},
        "all_bhsd_seg_slices": {"slices": "20", "hit_rate": 0.9},
    }
    view = OutlineCard.from_card(card)
    assert view.labelled_slices == (6, None)
    assert view.any_blood_dice == (0.42, None)
    assert view.pointing == (0.9, None)
    sentences = " ".join(help_sentences(card))
    assert "trained on only 6 labelled slices (slices with hand-drawn outlines)" in sentences
    assert "Dice of 0.42, where" in sentences and "95% CI" not in sentences
    assert "inside the bleed on 90% of test slices with a labelled bleed (pointing game)" in sentences
    # Parts of the wrong shape read as absent, like those of an older card that lacks them.
    garbled = OutlineCard.from_card(
        {"name": 3, "version": "1", "training": "40", "metrics": {"test": []}, "pointing_game": None}
    )
    assert garbled.name == "the segmentation model" and garbled.version == "1"
    assert garbled.labelled_slices == (None, None)
    assert garbled.any_blood_dice == (None, None) and garbled.pointing == (None, None)
    assert OutlineCard.from_card({}) == garbled.model_copy(update={"version": ""})


def test_slice_spacing_from_positions_or_thickness() -> None:
    assert slice_spacing_mm([0.0, 5.0, 10.0, 20.0], 2.5) == (5.0, "positions")
    assert slice_spacing_mm([0.0, None], 2.5) == (2.5, "slice_thickness")
    assert slice_spacing_mm([3.0], "1.25") == (1.25, "slice_thickness")
    assert slice_spacing_mm([1.0, 1.0], None) == (None, None)
    assert slice_spacing_mm([], 0) == (None, None)


def test_unknown_study_segmentation_files_are_404(seg_client: TestClient) -> None:
    response = seg_client.get(f"/api/v1/studies/{uuid.uuid4()}/mask_000.png")
    assert response.status_code == 404 and "No study" in response.json()["detail"]


def test_a_segmenter_with_other_preprocessing_gets_its_own_input(model_store: Path, wide_png: bytes) -> None:
    import keras

    from app.services.imaging import decode_upload
    from app.services.inference import SliceClassifier, SliceSegmenter
    from ml.data.preprocessing import PreprocessConfig
    from ml.model_io import load_bundle
    from ml.models.unet import build_unet
    from ml.segmenter import Segmenter

    card = {**tiny_seg_card(version="0.0.9"), "preprocessing": PreprocessConfig(image_size=32).to_dict()}
    keras.utils.set_random_seed(3)
    segmenter = SliceSegmenter(Segmenter(build_unet((32, 32, 1), width=4), card), Path("unused"))
    classifier = SliceClassifier(load_bundle(model_store / "ich-compact" / "0.0.2"))
    assert segmenter.config != classifier.config
    result = classifier.predict(decode_upload(wide_png, 10_000_000), segmenter)
    assert result.segmentation is not None
    assert result.segmentation.model_version == "0.0.9"
    assert result.segmentation.result.class_map.shape == (200, 300)
    assert result.timings_ms["segmentation"] >= 0.0
