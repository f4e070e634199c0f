"""A site operating point: the service decides with it everywhere, names it, keeps history, refuses bad ones."""

from __future__ import annotations

import io
import re
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from app.core.config import Settings
from app.core.errors import InvalidSettings
from app.core.startup import prepare
from app.main import create_app
from ml.evaluate import main as evaluate_main
from ml.operating_point import (
    ChosenOn,
    MeasuredAt,
    ModelName,
    OperatingPoint,
    StudyMeasuredAt,
    load_operating_point,
)
from tests.app.conftest import API_KEY, DATA_DIR
from tests.app.test_pages import sign_in
from tests.support.dicom_series import patient_jpegs, series_from_jpegs

CARD = "model card default"


def site_point(
    slice_threshold: float, version: str = "0.0.2", study_threshold: float | None = None
) -> OperatingPoint:
    return OperatingPoint(
        model=ModelName(name="ich-compact", version=version),
        slice_threshold=slice_threshold,
        study_threshold=study_threshold,
        study_aggregation="max" if study_threshold is not None else None,
        chosen_on=ChosenOn(
            labels="site-validation.csv",
            images=212,
            positive_images=40,
            target_sensitivity=0.95,
            slice=MeasuredAt(sensitivity=0.95, specificity=0.61),
            study=(
                StudyMeasuredAt(patients=30, sensitivity=1.0, specificity=0.7)
                if study_threshold is not None
                else None
            ),
        ),
        created=date(2026, 12, 1),
    )


SITE_SLICE = "site operating point, chosen on 212 images on 2026-12-01 (site-validation.csv: sensitivity 0.95, specificity 0.61)"


def opposite_threshold(probability: float) -> float:
    """A threshold in (0, 1) that decides ``probability`` the other way than the card's 0.5."""
    return (probability + 1.0) / 2.0 if probability >= 0.5 else probability / 2.0


@pytest.fixture
def base_settings(tmp_path: Path, model_store: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", model_store=model_store, default_model="ich-compact", api_keys=API_KEY
    )


def started(settings: Settings) -> TestClient:
    client = TestClient(create_app(settings), follow_redirects=False)
    client.headers["Authorization"] = f"Bearer {API_KEY}"
    return client


def pdf_text(data: bytes) -> str:
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def series() -> list[tuple[str, bytes]]:
    return series_from_jpegs(patient_jpegs(DATA_DIR, "050")[8:12])


def test_a_site_operating_point_decides_names_itself_and_leaves_old_results_alone(
    base_settings: Settings, tmp_path: Path, png_bytes: bytes, series: list[tuple[str, bytes]]
) -> None:
    with started(base_settings) as client:
        before = client.post("/api/v1/predictions", files={"file": ("slice.png", png_bytes)}).json()
        study_before = client.post(
            "/api/v1/studies?wait=120", files=[("files", item) for item in series]
        ).json()
    assert (before["threshold"], before["operating_point"]) == (0.5, CARD)
    assert (study_before["threshold"], study_before["operating_point"]) == (0.5, CARD)

    probability = before["probability"]
    slice_threshold = opposite_threshold(probability)
    study_threshold = opposite_threshold(study_before["probability"])
    point_file = site_point(slice_threshold, study_threshold=study_threshold).write(tmp_path / "site.json")
    site_settings = base_settings.model_copy(update={"operating_point": point_file})
    with started(site_settings) as client:
        after = client.post("/api/v1/predictions", files={"file": ("slice.png", png_bytes)}).json()
        # The same image, the same probability, decided the other way by the site's threshold.
        assert after["probability"] == pytest.approx(probability, abs=1e-6)
        assert after["label"] != before["label"]
        assert after["threshold"] == slice_threshold and after["operating_point"] == SITE_SLICE

        study_after = client.post(
            "/api/v1/studies?wait=120", files=[("files", item) for item in series]
        ).json()
        assert study_after["label"] != study_before["label"] and study_after["threshold"] == study_threshold
        assert study_after["operating_point"].startswith(
            "site operating point, chosen on 30 patients on 2026-12-01"
        )
        assert (
            client.get(study_after["links"]["self"]).json()["operating_point"]
            == study_after["operating_point"]
        )

        # Results decided before keep their threshold, label and operating point.
        assert client.get(before["links"]["self"]).json() == before
        assert client.get(study_before["links"]["self"]).json() == study_before
        summaries = {item["id"]: item for item in client.get("/api/v1/studies").json()["items"]}
        assert summaries[study_before["id"]]["operating_point"] == CARD

        new_report = pdf_text(client.get(after["links"]["report"]).content)
        assert f"Operating point: {SITE_SLICE}" in new_report
        old_report = pdf_text(client.get(before["links"]["report"]).content)
        assert f"Operating point: {CARD}" in old_report and "site operating point" not in old_report
        study_report = pdf_text(client.get(study_after["links"]["report"]).content)
        assert "Operating point: site operating point, chosen on 30 patients on 2026-12-01" in study_report

        sign_in(client)
        result_page = client.get(f"/predictions/{after['id']}").text
        assert f"Operating point: {SITE_SLICE}." in result_page
        assert f"Operating point: {CARD}." in client.get(f"/predictions/{before['id']}").text
        study_page = client.get(f"/studies/{study_after['id']}").text
        assert "Operating point: site operating point, chosen on 30 patients on 2026-12-01" in study_page

        model_page = client.get("/model").text
        assert "thresholds chosen for this site" in model_page and SITE_SLICE in model_page

        models = {item["version"]: item for item in client.get("/api/v1/models").json()}
        assert models["0.0.2"]["threshold"] == slice_threshold
        assert models["0.0.2"]["study_threshold"] == study_threshold
        assert models["0.0.2"]["operating_point"] == SITE_SLICE
        # Another version keeps its card's thresholds: the point was chosen for 0.0.2 only.
        assert (models["0.0.1"]["threshold"], models["0.0.1"]["operating_point"]) == (0.5, CARD)

        worklist = client.get("/worklist").text
        old_row = worklist[worklist.index(f'data-prediction-id="{before["id"]}"') :]
        old_row = old_row[: old_row.index("</tr>")]
        # The old result shows what decided it, and what the site's threshold would say now.
        assert f'0.500</span> <span class="muted small">{CARD}' in old_row
        assert 'data-decision-now="different"' in old_row and "(changed)" in old_row
        assert f'data-now-label="{after["label"]}"' in old_row
        new_row = worklist[worklist.index(f'data-prediction-id="{after["id"]}"') :]
        new_row = new_row[: new_row.index("</tr>")]
        assert 'data-decision-now="same"' in new_row and SITE_SLICE in new_row
        old_study_row = worklist[worklist.index(f'data-study-id="{study_before["id"]}"') :]
        assert 'data-decision-now="different"' in old_study_row[: old_study_row.index("</tr>")]

    # Back to the card: the site's results keep the site's threshold.
    with started(base_settings) as client:
        assert client.get(after["links"]["self"]).json() == after
        sign_in(client)
        assert "This service decides with the model card's thresholds" in client.get("/model").text


def test_explicit_thresholds_win_over_the_file_and_name_the_setting(
    base_settings: Settings, tmp_path: Path, png_bytes: bytes, series: list[tuple[str, bytes]]
) -> None:
    point_file = site_point(0.3).write(tmp_path / "site.json")
    settings = base_settings.model_copy(update={"operating_point": point_file, "study_threshold": 0.123})
    with started(settings) as client:
        body = client.post("/api/v1/predictions", files={"file": ("slice.png", png_bytes)}).json()
        assert (body["threshold"], body["operating_point"]) == (0.3, site_point(0.3).slice_source())
        study = client.post("/api/v1/studies?wait=120", files=[("files", item) for item in series]).json()
        assert (study["threshold"], study["operating_point"]) == (
            0.123,
            "site setting ICH_STUDY_THRESHOLD=0.123",
        )
    settings = base_settings.model_copy(update={"slice_threshold": 0.25})
    with started(settings) as client:
        body = client.post("/api/v1/predictions", files={"file": ("slice.png", png_bytes)}).json()
        assert (body["threshold"], body["operating_point"]) == (0.25, "site setting ICH_SLICE_THRESHOLD=0.25")
        # The tiny card names no study threshold, so studies follow the slice threshold in use.
        study = client.post("/api/v1/studies?wait=120", files=[("files", item) for item in series]).json()
        assert (study["threshold"], study["operating_point"]) == (
            0.25,
            "site setting ICH_SLICE_THRESHOLD=0.25",
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"ICH_OPERATING_POINT=.*missing\.json is refused: .* cannot be read \(FileNotFoundError"),
        ("{", r"is refused: .* is not JSON"),
        (site_point(0.4).to_json().replace("0.4", "1.4"), r"slice_threshold: Input should be less than 1"),
        (
            site_point(0.4, version="0.0.1").to_json(),
            r"chosen for ich-compact 0\.0\.1, but the model served is ich-compact 0\.0\.2",
        ),
    ],
)
def test_an_unusable_operating_point_stops_the_start(
    base_settings: Settings, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / ("missing.json" if content is None else "site.json")
    if content is not None:
        path.write_text(content, encoding="utf-8")
    settings = base_settings.model_copy(update={"operating_point": path})
    with pytest.raises(InvalidSettings, match=message):
        with started(settings):
            pass
    # python -m app refuses it too, before any worker starts.
    with pytest.raises(InvalidSettings, match=message):
        prepare(settings)


def test_thresholds_outside_zero_and_one_are_refused_in_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICH_SLICE_THRESHOLD", "1.5")
    with pytest.raises(ValueError, match="slice_threshold\n  Input should be less than 1"):
        Settings()
    monkeypatch.setenv("ICH_SLICE_THRESHOLD", "0")
    with pytest.raises(ValueError, match="greater than 0"):
        Settings()
    monkeypatch.setenv("ICH_SLICE_THRESHOLD", "")
    monkeypatch.setenv("ICH_OPERATING_POINT", "")
    assert not Settings().has_site_operating_point


def test_an_operating_point_needs_a_served_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty_store"
    empty.mkdir()
    settings = Settings(
        data_dir=tmp_path / "data",
        model_store=empty,
        default_model="ich-compact",
        api_keys=API_KEY,
        slice_threshold=0.3,
    )
    with pytest.raises(InvalidSettings, match="default model 'ich-compact' is not in"):
        prepare(settings)


@pytest.fixture
def site_csv(tmp_path: Path) -> Path:
    """A site's labelled CSV: twelve head_ct images (six with haemorrhage), by absolute path."""
    images = DATA_DIR / "head_ct" / "images"
    rows = [f"{images / f'{index:03d}.png'},1" for index in range(6)]
    rows += [f"{images / f'{index:03d}.png'},0" for index in range(100, 106)]
    path = tmp_path / "site" / "labels.csv"
    path.parent.mkdir()
    path.write_text("image,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_evaluate_writes_an_operating_point_the_service_decides_with(
    base_settings: Settings, model_store: Path, site_csv: Path, tmp_path: Path, png_bytes: bytes
) -> None:
    point_file = tmp_path / "operating-point.json"
    evaluate_main(
        [
            "--model-dir",
            str(model_store / "ich-compact" / "0.0.2"),
            "--labels",
            str(site_csv),
            "--output",
            str(tmp_path / "evaluation"),
            "--bootstrap-resamples",
            "20",
            "--choose-threshold",
            "0.95",
            "--write-operating-point",
            str(point_file),
        ]
    )
    point = load_operating_point(point_file)
    assert (point.model.name, point.model.version) == ("ich-compact", "0.0.2")
    assert (point.chosen_on.labels, point.chosen_on.images, point.chosen_on.positive_images) == (
        "labels.csv",
        12,
        6,
    )
    assert point.chosen_on.slice.sensitivity >= 0.95
    assert point.created == OperatingPoint.today()
    with started(base_settings.model_copy(update={"operating_point": point_file})) as client:
        body = client.post("/api/v1/predictions", files={"file": ("slice.png", png_bytes)}).json()
        assert body["threshold"] == point.slice_threshold
        assert body["operating_point"] == point.slice_source()
        assert body["operating_point"].startswith("site operating point, chosen on 12 images on ")
