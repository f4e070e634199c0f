"""The web pages in a real browser: Debian's Chromium, driven by Playwright, against a real uvicorn server.

Every page is saved as a screenshot under ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from pypdf import PdfReader

from tests.app.conftest import DATA_DIR
from tests.support.server import PROJECT_ROOT, ServiceProcess

CHROMIUM = Path(os.environ.get("ICH_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
PHONE = {"width": 375, "height": 800}
HEAD_CT = DATA_DIR / "head_ct" / "images"
UUID_PATH = re.compile(r"/predictions/[0-9a-f-]{36}$")


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def rich_card(card: dict[str, object]) -> dict[str, object]:
    """The tiny model's card filled out as training writes it, with metrics from synthetic scores."""
    from ml.evaluation.metrics import summarize

    rng = np.random.default_rng(0)

    def split_report(size: int) -> dict[str, object]:
        labels = rng.integers(0, 2, size)
        scores = np.clip(labels * 0.35 + rng.normal(0.35, 0.2, size), 0, 1)
        groups = [f"p{index // 4}" for index in range(size)]
        slices = summarize(labels, scores, 0.5, groups, num_resamples=40, seed=0)
        patients = summarize(labels[::4], scores[::4], 0.5, None, num_resamples=40, seed=0)
        return {
            "all": {"slice": slices, "patient": patients},
            "ct_ich": {"slice": slices, "patient": patients},
            "head_ct": {"slice": slices},
        }

    return {
        **card,
        "created": "2025-01-01T00:00:00Z",
        "task": "Binary classification of intracranial haemorrhage on one axial brain CT slice.",
        "backbone": "tiny",
        "parameters": 1234,
        "threshold_rule": "highest threshold with sensitivity >= 0.95 on the validation split",
        "training": {
            "datasets": ["head_ct", "ct_ich"],
            "split": "by patient, stratified by dataset and patient label, seeded",
            "counts": {
                "train": {"images": 1400, "positive": 420, "patients": 60},
                "validation": {"images": 300, "positive": 90, "patients": 13},
                "test": {"images": 300, "positive": 95, "patients": 13},
            },
            "epochs_run": 3,
            "seconds": 95.0,
        },
        "metrics": {"validation": split_report(80), "test": split_report(80)},
        "robustness": {
            "n": 80,
            "half_resolution": {"mean_abs_change": 0.02, "max_abs_change": 0.1, "flip_rate": 0.05},
            "black_border_10pct": {"mean_abs_change": 0.03, "max_abs_change": 0.2, "flip_rate": 0.0625},
        },
        "intended_use": "Browser-test model: research and decision support only. Not for clinical use.",
        "limitations": ["Tiny untrained test model.", "Metrics here come from synthetic scores."],
        "reproduce": "python -m ml.train --name ich-compact --version 0.0.2 --backbone tiny",
    }


@pytest.fixture(scope="module")
def browser_model_store(
    model_store: Path, seg_model_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model with a full model card, ROC and calibration plots (no confusion-matrix plot),
    and the tiny segmentation model that outlines every slice."""
    from ml.evaluation.plots import save_calibration, save_roc

    store = tmp_path_factory.mktemp("browser_store")
    bundle = store / "ich-compact" / "0.0.2"
    shutil.copytree(model_store / "ich-compact" / "0.0.2", bundle)
    shutil.copytree(seg_model_store / "ich-unet" / "0.0.1", store / "ich-unet" / "0.0.1")
    card_path = bundle / "model_card.json"
    card_path.write_text(json.dumps(rich_card(json.loads(card_path.read_text()))))
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 120)
    scores = np.clip(labels * 0.4 + rng.normal(0.3, 0.2, 120), 0, 1)
    save_roc(labels, scores, 0.5, bundle / "roc_test.png", "ROC, test split")
    save_calibration(labels, scores, bundle / "calibration_test.png", "Calibration, test split")
    return store


@pytest.fixture(scope="module")
def server(
    browser_model_store: Path, api_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    data = tmp_path_factory.mktemp("browser_data")
    env = {
        "ICH_DATA_DIR": str(data),
        "ICH_MODEL_STORE": str(browser_model_store),
        "ICH_DEFAULT_MODEL": "ich-compact",
        "ICH_API_KEYS": api_key,
        "ICH_INFERENCE_THREADS": "1",
        # One worker thread: a study queued behind another shows its progress on its page.
        "ICH_STUDY_JOB_WORKERS": "1",
    }
    with ServiceProcess(env) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"Chromium not found at {CHROMIUM}: install it with 'make system-deps' (apt-get install chromium)."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, server: ServiceProcess) -> Iterator[BrowserContext]:
    opened = browser.new_context(
        base_url=server.url, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    opened.set_default_timeout(30_000)
    yield opened
    opened.close()


def sign_in(page: Page, key: str) -> None:
    page.goto("/signin")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/upload$"))


def upload(page: Page, path: Path, **fields: str) -> str:
    """Upload through the form; returns the new analysis's id."""
    page.goto("/upload")
    for name, value in fields.items():
        page.locator(f"#{name}").fill(value)
    page.set_input_files("#file", str(path))
    page.get_by_role("button", name="Analyse").click()
    expect(page).to_have_url(UUID_PATH)
    return page.url.rsplit("/", 1)[1]


def drop_file(page: Page, path: Path) -> None:
    """Drop a file on the upload page's drop zone, as dragging it from the desktop does."""
    page.locator("[data-drop-zone]").evaluate(
        """(zone, [name, encoded]) => {
            const bytes = Uint8Array.from(atob(encoded), (character) => character.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        [path.name, base64.b64encode(path.read_bytes()).decode("ascii")],
    )


def image_loaded(page: Page, selector: str, timeout_s: float = 15.0) -> bool:
    """Whether the image loads (decoded, with pixels) within ``timeout_s``; polled from Python,
    since the pages' Content Security Policy forbids the string evaluation wait_for_function uses."""
    deadline = time.monotonic() + timeout_s
    while True:
        loaded = bool(page.locator(selector).evaluate("image => image.complete && image.naturalWidth > 0"))
        if loaded or time.monotonic() > deadline:
            return loaded
        page.wait_for_timeout(50)


def test_sign_in_upload_result_slider_and_downloads(context: BrowserContext, api_key: str) -> None:
    page = context.new_page()
    page.goto("/upload")
    expect(page).to_have_url(re.compile(r"/signin\b"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shoot(page, "signin")

    page.get_by_label("API key").fill("ich_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    shoot(page, "signin-error")

    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/upload$"))
    expect(page.get_by_role("heading", name="Analyse a CT slice")).to_be_visible()
    shoot(page, "upload")

    # Keyboard: the skip link comes first, and Tab reaches the file input and the Analyse button.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    reached = []
    for _ in range(25):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        )
        if reached[-1] == "file":
            shoot(page, "upload-keyboard-focus")
    assert "file" in reached and "Analyse" in reached
    assert reached.index("file") < reached.index("Analyse")

    page.get_by_label("Patient name").fill("Browser Patient")
    page.get_by_label("Patient ID").fill("BR-001")
    page.get_by_label("Study description").fill("CT head without contrast")
    drop_file(page, HEAD_CT / "003.png")
    assert page.evaluate("document.getElementById('file').files[0].name") == "003.png"
    expect(page.locator("[data-file-name]")).to_contain_text("003.png")

    # Hold the form back once to see the progress state the page shows while the model runs.
    page.evaluate(
        "document.getElementById('upload-form').addEventListener('submit', e => e.preventDefault())"
    )
    page.get_by_role("button", name="Analyse").click()
    expect(page.get_by_role("status").filter(has_text="Analysing")).to_be_visible()
    expect(page.get_by_role("button", name="Analyse")).to_be_disabled()
    shoot(page, "upload-progress")
    with page.expect_navigation():
        page.evaluate("document.getElementById('upload-form').submit()")
    expect(page).to_have_url(UUID_PATH)

    label = page.locator("[data-label-text]").inner_text()
    assert label in ("Haemorrhage suspected", "No haemorrhage detected")
    expect(page.locator("[data-probability]")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    expect(
        page.get_by_role("img", name=re.compile("Probability .* threshold marked at 50.0%"))
    ).to_be_visible()
    expect(page.locator("[data-model-name]")).to_have_text("ich-compact")
    expect(page.locator("[data-model-version]")).to_have_text("0.0.2")
    expect(page.locator("main")).to_contain_text("Not for clinical use")
    expect(page.locator("main")).to_contain_text("Browser Patient")
    expect(page.locator("main")).to_contain_text("Model and Grad-CAM")
    page.wait_for_load_state("load")
    assert image_loaded(page, "img[alt^='The uploaded CT slice']")
    assert image_loaded(page, "#overlay-image")
    shoot(page, "result")

    overlay = page.locator("#overlay-image")
    slider = page.get_by_label("Overlay opacity")
    slider.focus()
    page.keyboard.press("Home")
    assert overlay.evaluate("image => image.style.opacity") == "0"
    expect(page.locator("#overlay-opacity-value")).to_have_text("0%")
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    assert overlay.evaluate("image => image.style.opacity") == "0.4"
    expect(page.locator("#overlay-opacity-value")).to_have_text("40%")
    shoot(page, "result-opacity-40")

    page.get_by_label("Show overlay").uncheck()
    expect(overlay).to_be_hidden()
    expect(slider).to_be_disabled()
    page.get_by_label("Show overlay").check()
    expect(overlay).to_be_visible()

    # The outlines by subtype: stacked over the slice, a legend with colours and areas, a toggle.
    contours = page.locator("#contours-image")
    assert image_loaded(page, "#contours-image")
    expect(contours).to_be_visible()
    legend = page.get_by_role("list", name="Outline colours by subtype")
    expect(legend.get_by_role("listitem")).to_have_count(5)
    for name in ("Epidural", "Intraparenchymal", "Intraventricular", "Subarachnoid", "Subdural"):
        expect(legend).to_contain_text(name)
    expect(legend.locator("li").first).to_contain_text(re.compile(r"px|none outlined"))
    assert legend.locator("svg rect").first.get_attribute("fill") == "#e69f00"
    outlines_box = contours.bounding_box()
    slice_box = page.locator("img[alt^='The uploaded CT slice']").bounding_box()
    assert outlines_box is not None and slice_box is not None
    assert (outlines_box["x"], outlines_box["y"], outlines_box["width"]) == pytest.approx(
        (slice_box["x"], slice_box["y"], slice_box["width"]), abs=1
    )
    page.get_by_label("Show outlines").uncheck()
    expect(contours).to_be_hidden()
    shoot(page, "result-outlines-hidden")
    page.get_by_label("Show outlines").check()
    expect(contours).to_be_visible()
    page.get_by_text("How far to trust the outlines and the heat map").click()
    expect(page.locator("[data-outline-help]")).to_contain_text("52 labelled slices")
    expect(page.locator("[data-outline-help]")).to_contain_text("does not point at the bleed")
    shoot(page, "result-outlines")

    with page.expect_download() as report_download:
        page.get_by_role("link", name="Download PDF report").click()
    report = Path(report_download.value.path()).read_bytes()
    assert report.startswith(b"%PDF")
    assert report_download.value.suggested_filename.endswith(".pdf")
    text = "".join(sheet.extract_text() for sheet in PdfReader(io.BytesIO(report)).pages)
    assert "Browser Patient" in text and "not for clinical use" in text.lower()

    with page.expect_download() as overlay_download:
        page.get_by_role("link", name="Download overlay (PNG)").click()
    assert Path(overlay_download.value.path()).read_bytes().startswith(b"\x89PNG")

    page.get_by_role("link", name="Analyse another slice").click()
    expect(page).to_have_url(re.compile(r"/upload$"))


def test_worklist_search_sort_and_paging(
    context: BrowserContext, server: ServiceProcess, api_key: str
) -> None:
    page = context.new_page()
    sign_in(page, api_key)
    first = upload(page, HEAD_CT / "120.png", patient_id="WL-1", patient_name="Worklist One")
    upload(page, DATA_DIR / "ct_ich" / "Patients_CT" / "050" / "brain" / "1.jpg", patient_id="WL-2")
    dicom = sorted((DATA_DIR / "rsna_dicom" / "dicom").glob("*.dcm"))[0]
    newest = upload(page, dicom, patient_id="WL-3")
    expect(page.locator("figcaption").first).to_contain_text("DICOM")

    # The tiny model's labels are arbitrary: make the oldest one positive and the others negative.
    with sqlite3.connect(Path(server.env["ICH_DATA_DIR"]) / "ich.sqlite3") as database:
        database.execute(
            "UPDATE predictions SET label = 'no_hemorrhage', probability = 0.2 WHERE patient_id LIKE 'WL-%'"
        )
        database.execute(
            "UPDATE predictions SET label = 'hemorrhage', probability = 0.9 WHERE id = ?", (first,)
        )

    page.get_by_role("link", name="Worklist", exact=True).click()
    page.get_by_label("Patient ID").fill("WL-")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("table.worklist tbody tr")
    expect(rows).to_have_count(3)
    assert rows.first.get_attribute("data-prediction-id") == newest
    expect(page.get_by_role("status")).to_contain_text("3 analyses match")

    page.get_by_label("Order").select_option("positives")
    page.get_by_role("button", name="Apply").click()
    assert rows.first.get_attribute("data-prediction-id") == first
    expect(rows.first).to_contain_text("Haemorrhage suspected")
    expect(rows.nth(1)).to_contain_text("No haemorrhage detected")
    shoot(page, "worklist")

    page.goto("/worklist?patient_id=WL-&page_size=2")
    expect(rows).to_have_count(2)
    expect(page.get_by_role("navigation", name="Worklist pages")).to_contain_text("Page 1 of 2")
    page.get_by_role("link", name="Next page").click()
    expect(rows).to_have_count(1)
    expect(page.get_by_role("navigation", name="Worklist pages")).to_contain_text("Page 2 of 2")
    rows.first.get_by_role("link", name=re.compile("^Open")).click()
    expect(page).to_have_url(re.compile(f"/predictions/{first}$"))
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete this analysis").click()
    expect(page).to_have_url(re.compile(r"/worklist$"))
    expect(page.get_by_role("status").first).to_contain_text("The analysis and its images were deleted.")
    assert page.locator(f'[data-prediction-id="{first}"]').count() == 0

    page.goto("/worklist?patient_id=WL-2")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("WL-2")


def test_unreadable_file_shows_a_message(context: BrowserContext, api_key: str) -> None:
    page = context.new_page()
    sign_in(page, api_key)
    page.get_by_label("Patient ID").fill("BAD-1")
    page.set_input_files(
        "#file",
        files=[
            {"name": "notes.png", "mimeType": "image/png", "buffer": b"These are my notes, not an image."}
        ],
    )
    with page.expect_response(
        lambda response: response.url.endswith("/upload") and response.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Analyse").click()
    assert answer.value.status == 415
    error = page.locator("#upload-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("notes.png")
    expect(error).to_be_focused()
    assert not page.locator("body").inner_text().lstrip().startswith("{")
    expect(page.get_by_label("Patient ID")).to_have_value("BAD-1")
    expect(page.get_by_role("button", name="Analyse")).to_be_enabled()
    shoot(page, "upload-error")


def test_model_page(context: BrowserContext, api_key: str) -> None:
    page = context.new_page()
    sign_in(page, api_key)
    page.get_by_role("link", name="Model", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("ich-compact")
    expect(page.get_by_role("heading", name="Intended use")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Tiny untrained test model.")
    expect(page.get_by_role("table", name="Test split")).to_contain_text("CT-ICH (PhysioNet), per patient")
    expect(
        page.get_by_role("table", name="Images, images with haemorrhage and patients in each split")
    ).to_contain_text("1400")
    page.wait_for_load_state("load")
    assert image_loaded(page, "img[alt^='ROC curve']")
    assert image_loaded(page, "img[alt^='Calibration plot']")
    expect(page.locator(".plot-missing")).to_have_text("Not available")
    shoot(page, "model")


def test_every_page_fits_a_phone(browser: Browser, server: ServiceProcess, api_key: str) -> None:
    phone = browser.new_context(base_url=server.url, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        page.goto("/signin")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shoot(page, "phone-signin")
        sign_in(page, api_key)
        prediction = upload(page, HEAD_CT / "150.png", patient_name="Phone Patient", patient_id="PH-1")
        from tests.support.dicom_series import patient_jpegs, series_from_jpegs

        series = series_from_jpegs(patient_jpegs(DATA_DIR, "051")[10:14])
        study = httpx.post(
            f"{server.url}/api/v1/studies?wait=120",
            files=[("files", item) for item in series],
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=120,
        )
        assert study.status_code == 201, study.text
        for path, name in [
            ("/upload", "phone-upload"),
            (f"/predictions/{prediction}", "phone-result"),
            (f"/studies/{study.json()['id']}", "phone-study"),
            ("/worklist", "phone-worklist"),
            ("/model", "phone-model"),
            ("/no-such-page", "phone-not-found"),
        ]:
            page.goto(path)
            page.wait_for_load_state("load")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{path} is {width} px wide on a {PHONE['width']} px screen"
            shoot(page, name)
    finally:
        phone.close()


def test_sign_out_and_forms_without_csrf_token(
    context: BrowserContext, api_key: str, png_bytes: bytes
) -> None:
    page = context.new_page()
    sign_in(page, api_key)
    refused = context.request.post(
        "/upload", multipart={"file": {"name": "a.png", "mimeType": "image/png", "buffer": png_bytes}}
    )
    assert refused.status == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "did not come from this site" in refused.text()
    page.set_content(refused.text())
    shoot(page, "csrf-refused")

    page.goto("/no-such-page")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    shoot(page, "not-found")

    page.goto("/upload")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    expect(page.get_by_role("status")).to_contain_text("You have signed out")
    page.goto("/worklist")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fworklist$"))


def test_study_upload_and_slice_scroller(
    context: BrowserContext, server: ServiceProcess, api_key: str, tmp_path: Path
) -> None:
    from tests.support.dicom_series import patient_jpegs, series_from_jpegs

    folder = tmp_path / "series"
    folder.mkdir()
    paths = []
    for name, data in series_from_jpegs(patient_jpegs(DATA_DIR, "050")[8:16]):
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    page = context.new_page()
    sign_in(page, api_key)
    page.set_input_files("#study-files", [str(path) for path in paths])
    expect(page.locator("[data-study-file-names]")).to_contain_text("8 files")
    shoot(page, "study-upload")
    # A long study ahead holds the only worker: this one waits, then runs, with its progress shown.
    ahead = httpx.post(
        f"{server.url}/api/v1/studies",
        files=[("files", item) for item in series_from_jpegs(patient_jpegs(DATA_DIR, "051") * 3)],
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=120,
    )
    assert ahead.status_code == 202, ahead.text
    page.get_by_role("button", name="Upload series").click()
    expect(page).to_have_url(re.compile(r"/studies/[0-9a-f-]{36}$"))
    study_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", name="Study analysis")).to_be_visible()
    bar = page.locator("[data-job-bar]")
    expect(bar).to_be_visible()
    expect(page.locator("[data-job-text]")).to_have_text(re.compile(r"^\d of 8 slices$"))
    assert bar.get_attribute("max") == "8"
    shoot(page, "study-progress")
    # The page fills in by itself when the analysis ends.
    expect(page.get_by_role("heading", name="Study result")).to_be_visible(timeout=120_000)
    expect(page.locator("[data-label-text]")).to_have_text(
        re.compile("^(Haemorrhage suspected|No haemorrhage detected)$")
    )

    status = page.locator("[data-scroller-status]")
    slider = page.get_by_role("slider", name="Slice")
    expect(slider).to_be_visible()
    start = int(slider.input_value())
    expect(status).to_contain_text(f"Slice {start + 1} of 8")
    expect(status).to_contain_text("(key slice)")
    page.wait_for_load_state("load")
    assert image_loaded(page, "[data-scroller-image]")
    shoot(page, "study")

    slider.fill("0")
    expect(status).to_contain_text("Slice 1 of 8")
    expect(page.get_by_role("button", name="Previous slice")).to_be_disabled()
    page.get_by_role("button", name="Next slice").click()
    expect(status).to_contain_text("Slice 2 of 8")
    assert (
        page.locator("[data-scroller-image]")
        .get_attribute("src", timeout=5000)
        .endswith(  # type: ignore[union-attr]
            "/overlay_001.png"
        )
    )
    page.locator("[data-scroller-view]").focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(status).to_contain_text("Slice 4 of 8")
    assert slider.input_value() == "3"
    page.keyboard.press("End")
    expect(status).to_contain_text("Slice 8 of 8")
    expect(page.get_by_role("button", name="Next slice")).to_be_disabled()
    assert image_loaded(page, "[data-scroller-image]")
    cursor_x = float(page.locator("[data-chart-cursor]").get_attribute("x1") or "nan")
    assert cursor_x == pytest.approx(600.0)
    # The outlines follow the scroller and can be hidden.
    outlines = page.locator("[data-scroller-contours]")
    assert (outlines.get_attribute("src") or "").endswith("/contours_007.png")
    assert image_loaded(page, "[data-scroller-contours]")
    page.get_by_label("Show outlines").uncheck()
    expect(outlines).to_be_hidden()
    page.get_by_label("Show outlines").check()
    expect(outlines).to_be_visible()
    volume = page.locator("[data-study-volume]")
    expect(volume).to_contain_text("Voxel count")
    expect(volume).to_contain_text("ABC/2 estimate")
    expect(
        volume.get_by_role("list", name="Outline colours by subtype").get_by_role("listitem")
    ).to_have_count(5)
    shoot(page, "study-scrolled")

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download PDF study report").click()
    report = download_info.value
    text = " ".join(sheet.extract_text() for sheet in PdfReader(report.path()).pages)
    assert "Key slices" in text and "Not for clinical use" in text
    assert "ABC/2" in text and "Subdural" in text and "Segmentation ich-unet 0.0.1" in text

    page.goto("/worklist")
    expect(page.get_by_role("heading", name="Studies")).to_be_visible()
    expect(page.locator(f'[data-study-id="{study_id}"]')).to_have_count(1)
    shoot(page, "worklist-studies")


# Every table and definition cell, with what it holds and whether it is too narrow for it: wider
# content than the cell (scrollWidth past clientWidth), or a word broken across lines although the
# whole table or list is wide enough to hold it on one (the Timings box once wrapped "11 ms" one
# character a line). Words are cut at spaces and hyphens, where a browser may break a line anyway.
CRAMPED_CELLS = """() => {
    const cramped = [];
    for (const cell of document.querySelectorAll("td, th, dt, dd")) {
        if (cell.getClientRects().length === 0) continue;
        const room = (cell.closest("table, dl") || cell).clientWidth;
        const overflow = cell.scrollWidth > cell.clientWidth + 1;
        const broken = [];
        const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            for (const match of node.data.matchAll(/[^\\s\\-\\u2010-\\u2014]+/g)) {
                const range = document.createRange();
                range.setStart(node, match.index);
                range.setEnd(node, match.index + match[0].length);
                const lines = Array.from(range.getClientRects()).filter((rect) => rect.width > 0);
                const width = lines.reduce((sum, rect) => sum + rect.width, 0);
                if (lines.length > 1 && width < room) broken.push(match[0]);
            }
        }
        if (overflow || broken.length > 0) {
            cramped.push({
                cell: cell.tagName.toLowerCase(),
                text: cell.innerText.trim().slice(0, 60),
                width: cell.clientWidth,
                content: cell.scrollWidth,
                broken: broken,
            });
        }
    }
    return cramped;
}"""
LAYOUT_WIDTHS = (1280, 390)


def test_no_table_or_definition_cell_is_narrower_than_its_content(
    browser: Browser, server: ServiceProcess, api_key: str
) -> None:
    from tests.support.dicom_series import patient_jpegs, series_from_jpegs

    series = series_from_jpegs(patient_jpegs(DATA_DIR, "051")[10:13])
    study = httpx.post(
        f"{server.url}/api/v1/studies?wait=120",
        files=[("files", item) for item in series],
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=120,
    )
    assert study.status_code == 201, study.text
    prediction = ""
    for width in LAYOUT_WIDTHS:
        opened = browser.new_context(base_url=server.url, viewport={"width": width, "height": 900})
        opened.set_default_timeout(30_000)
        try:
            page = opened.new_page()
            sign_in(page, api_key)
            if not prediction:
                prediction = upload(
                    page,
                    HEAD_CT / "042.png",
                    patient_name="Layout Patient",
                    patient_id="LAYOUT-1",
                    study_description="CT head without contrast",
                )
            for path, name in [
                ("/upload", "upload"),
                (f"/predictions/{prediction}", "result"),
                (f"/studies/{study.json()['id']}", "study"),
                ("/worklist", "worklist"),
                ("/model", "model"),
            ]:
                page.goto(path)
                page.wait_for_load_state("load")
                shoot(page, f"cells-{width}-{name}")
                cramped = page.evaluate(CRAMPED_CELLS)
                assert cramped == [], f"{path} at {width} px: cells narrower than their content: {cramped}"
        finally:
            opened.close()
