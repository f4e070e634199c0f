"""The web pages through FastAPI's TestClient: sessions, CSRF, redirects, headers and HTML errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pypdf import PdfReader

from app.api.web_auth import safe_next
from app.core.config import Settings
from app.core.sessions import SECRET_FILE, SESSION_COOKIE, SessionSigner
from app.db import Prediction
from app.main import create_app
from app.services.predictions import UploadFields
from tests.app.conftest import API_KEY

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings(tmp_path: Path, model_store: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        model_store=model_store,
        default_model="ich-compact",
        api_keys=API_KEY,
        max_upload_mb=2,
    )


@pytest.fixture
def browser(settings: Settings) -> Iterator[TestClient]:
    """A client that behaves like a browser: cookies, no API key, redirects not followed."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def csrf_of(response: httpx.Response) -> str:
    match = CSRF.search(response.text)
    assert match, response.text
    return match.group(1)


def sign_in(client: TestClient, key: str = API_KEY) -> httpx.Response:
    token = csrf_of(client.get("/signin"))
    response = client.post("/signin", data={"csrf_token": token, "api_key": key})
    assert response.status_code == 303, response.text
    return response


def upload(client: TestClient, data: bytes, name: str = "slice.png", **fields: str) -> httpx.Response:
    token = csrf_of(client.get("/upload"))
    return client.post("/upload", data={"csrf_token": token, **fields}, files={"file": (name, data)})


def alert_text(response: httpx.Response) -> str:
    match = re.search(r'role="alert"[^>]*>\s*(?:<p>)?(.*?)(?:</p>)?\s*</div>', response.text, re.S)
    assert match, response.text
    return match.group(1).strip()


def assert_html_page(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<!doctype html>")
    assert "Not for clinical use" in response.text


def test_pages_redirect_to_sign_in_without_a_session(browser: TestClient) -> None:
    some_id = uuid.uuid4()
    for path in (
        "/worklist",
        "/model",
        f"/predictions/{some_id}",
        f"/predictions/{some_id}/original.png",
        f"/predictions/{some_id}/report.pdf",
        "/model/plots/roc_test.png",
    ):
        response = browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/signin?next="), path
    assert browser.get("/upload").headers["location"] == "/signin"
    assert browser.get("/").headers["location"] == "/upload"
    assert (
        browser.get("/worklist?patient_id=P-1").headers["location"]
        == "/signin?next=%2Fworklist%3Fpatient_id%3DP-1"
    )


def test_sign_in_with_an_api_key_sets_a_signed_http_only_cookie(browser: TestClient) -> None:
    page = browser.get("/signin?next=/worklist")
    assert page.status_code == 200
    assert_html_page(page)
    assert 'name="next" value="/worklist"' in page.text
    token = csrf_of(page)

    wrong = browser.post("/signin", data={"csrf_token": token, "api_key": "ich_wrong-key-000000000000"})
    assert wrong.status_code == 403
    assert_html_page(wrong)
    assert alert_text(wrong) == "That API key is not valid or has been revoked. Check it and try again."
    empty = browser.post("/signin", data={"csrf_token": token, "api_key": "  "})
    assert empty.status_code == 400
    assert alert_text(empty) == "Enter your API key to sign in."
    assert browser.get("/worklist").status_code == 303

    right = browser.post("/signin", data={"csrf_token": token, "api_key": API_KEY, "next": "/worklist"})
    assert right.status_code == 303
    assert right.headers["location"] == "/worklist"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert API_KEY not in cookie and API_KEY[4:20] not in cookie
    assert browser.get("/worklist").status_code == 200
    # Signed in already: the sign-in page goes straight on.
    assert browser.get("/signin?next=/model").headers["location"] == "/model"
    # The API stays key-only: a browser session does not open it.
    assert browser.get("/api/v1/predictions").status_code == 401


def test_sign_in_never_redirects_to_another_site() -> None:
    for target in (
        "//evil.example/x",
        "https://evil.example",
        "/\\evil.example",
        "",
        "signin",
        "/signin?next=/x",
    ):
        assert safe_next(target) == "/upload", target
    assert safe_next("/worklist?page=2") == "/worklist?page=2"


def test_forms_without_the_csrf_token_are_refused(browser: TestClient, png_bytes: bytes) -> None:
    refused = browser.post("/signin", data={"api_key": API_KEY})
    assert refused.status_code == 403
    assert_html_page(refused)
    assert "did not come from this site" in alert_text(refused)
    assert browser.get("/upload").status_code == 303

    sign_in(browser)
    prediction_id = upload(browser, png_bytes).headers["location"].rsplit("/", 1)[1]
    for path, data in (
        ("/upload", {}),
        ("/upload", {"csrf_token": "forged"}),
        ("/signout", {}),
        (f"/predictions/{prediction_id}/delete", {"csrf_token": ""}),
    ):
        files = {"file": ("a.png", png_bytes)} if path == "/upload" else None
        response = browser.post(path, data=data, files=files)
        assert response.status_code == 403, path
        assert "did not come from this site" in alert_text(response)
    assert browser.get(f"/predictions/{prediction_id}").status_code == 200
    assert (
        browser.get("/api/v1/predictions", headers={"Authorization": f"Bearer {API_KEY}"}).json()["total"]
        == 1
    )


def test_security_headers_and_no_inline_code(browser: TestClient, png_bytes: bytes) -> None:
    sign_in(browser)
    result = upload(browser, png_bytes).headers["location"]
    for path in ("/upload", result, "/worklist", "/model", f"{result}/original.png"):
        response = browser.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "img-src 'self' data: blob:" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        if response.headers["content-type"].startswith("text/html"):
            assert response.headers["cache-control"] == "no-store"
            assert "<script>" not in response.text and "<style" not in response.text
            assert " style=" not in response.text and "javascript:" not in response.text
    css = browser.get("/static/css/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    assert (
        browser.get("/static/js/app.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    assert "content-security-policy" not in browser.get("/docs").headers


def test_upload_shows_the_result_with_images_and_report(browser: TestClient, png_bytes: bytes) -> None:
    sign_in(browser)
    response = upload(browser, png_bytes, patient_name="Page Patient", patient_id="PG-1")
    assert response.status_code == 303
    location = response.headers["location"]
    assert re.fullmatch(r"/predictions/[0-9a-f-]{36}", location)
    page = browser.get(location)
    assert page.status_code == 200
    assert_html_page(page)
    assert ("Haemorrhage suspected" in page.text) != ("No haemorrhage detected" in page.text)
    assert "data-model-name>ich-compact<" in page.text and "data-model-version>0.0.2<" in page.text
    assert "Page Patient" in page.text and "PG-1" in page.text
    assert 'aria-label="Probability ' in page.text and "threshold marked at 50.0%" in page.text
    for name in ("original.png", "overlay.png"):
        image = browser.get(f"{location}/{name}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert "content-disposition" not in image.headers
    download = browser.get(f"{location}/overlay.png?download=1")
    assert download.headers["content-disposition"].startswith('attachment; filename="ich-overlay-')
    report = browser.get(f"{location}/report.pdf")
    assert report.headers["content-type"] == "application/pdf"
    assert report.headers["content-disposition"].startswith('attachment; filename="ich-report-')
    text = "".join(sheet.extract_text() for sheet in PdfReader(io.BytesIO(report.content)).pages)
    assert "Page Patient" in text


def test_upload_errors_show_on_the_form(browser: TestClient, png_bytes: bytes) -> None:
    sign_in(browser)
    text_file = upload(browser, b"not an image at all", name="notes.png", patient_id="KEEP-1")
    assert text_file.status_code == 415
    assert_html_page(text_file)
    message = alert_text(text_file)
    assert message.startswith("“notes.png” could not be analysed.") and "PNG, JPEG or DICOM" in message
    assert 'value="KEEP-1"' in text_file.text

    token = csrf_of(browser.get("/upload"))
    missing = browser.post("/upload", data={"csrf_token": token}, files={"file": ("", b"")})
    assert missing.status_code == 400
    assert alert_text(missing) == "Choose a CT slice to analyse: a PNG, JPEG or DICOM file."

    long_name = upload(browser, png_bytes, patient_name="x" * 201)
    assert long_name.status_code == 400
    assert "Patient name is longer than 200 characters" in alert_text(long_name)

    too_large = upload(browser, b"\0" * (2 * 1024 * 1024 + 10), name="big.dcm")
    assert too_large.status_code == 413
    assert "larger than the limit of 2 MiB" in alert_text(too_large)
    assert (
        browser.get("/api/v1/predictions", headers={"Authorization": f"Bearer {API_KEY}"}).json()["total"]
        == 0
    )


def test_errors_are_html_pages_not_json(browser: TestClient) -> None:
    sign_in(browser)
    for path, code in (
        (f"/predictions/{uuid.uuid4()}", 404),
        ("/predictions/not-an-id", 404),
        (f"/predictions/{uuid.uuid4()}/secret.txt", 404),
        ("/worklist?page=0", 400),
        ("/worklist?order=sideways", 400),
        ("/model/plots/roc_test.png", 404),
        ("/model/plots/..%2Fmodel_card.png", 404),
    ):
        response = browser.get(path, headers={"Accept": "text/html,application/xhtml+xml"})
        assert response.status_code == code, path
        assert_html_page(response)
        assert not response.text.lstrip().startswith("{")
    malformed = browser.get("/studies/not-an-id", headers={"Accept": "text/html,application/xhtml+xml"})
    assert malformed.status_code == 404 and "No study with id &#39;not-an-id&#39;." in malformed.text
    unknown = browser.get("/no-such-page", headers={"Accept": "text/html,application/xhtml+xml"})
    assert unknown.status_code == 404
    assert_html_page(unknown)
    assert "There is no page at this address." in unknown.text
    api = browser.get("/api/v1/no-such-thing", headers={"Accept": "text/html"})
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}


def test_worklist_search_sorting_and_paging(browser: TestClient, png_bytes: bytes) -> None:
    service = browser.app.state.predictions  # type: ignore[attr-defined]
    created = [service.create(png_bytes, UploadFields(patient_id=f"WL-{index}")) for index in range(3)]
    other = service.create(png_bytes, UploadFields(patient_id="OTHER"))
    with browser.app.state.database.session() as session:  # type: ignore[attr-defined]
        for prediction in [*created, other]:
            row = session.get(Prediction, prediction.id)
            assert row is not None
            positive = prediction.id == created[0].id
            row.label = "hemorrhage" if positive else "no_hemorrhage"
            row.probability = 0.9 if positive else 0.1

    def listed(query: str) -> list[str]:
        response = browser.get(f"/worklist{query}")
        assert response.status_code == 200
        return re.findall(r'data-prediction-id="([^"]+)"', response.text)

    sign_in(browser)
    newest_first = [other.id, created[2].id, created[1].id, created[0].id]
    assert listed("") == newest_first
    assert listed("?order=positives") == [created[0].id, other.id, created[2].id, created[1].id]
    assert listed("?patient_id=WL-") == [created[2].id, created[1].id, created[0].id]
    assert listed("?result=hemorrhage") == [created[0].id]

    first = browser.get("/worklist?page_size=3")
    assert "Page 1 of 2" in first.text
    assert 'href="/worklist?page_size=3&amp;page=2"' in first.text
    assert listed("?page_size=3&page=2") == [created[0].id]
    beyond = browser.get("/worklist?page=9")
    assert "There is no page 9." in beyond.text
    assert "row-positive" in browser.get("/worklist?order=positives").text
    assert "No analyses match." in browser.get("/worklist?patient_id=NOBODY").text


def test_delete_from_the_result_page(browser: TestClient, png_bytes: bytes) -> None:
    sign_in(browser)
    location = upload(browser, png_bytes).headers["location"]
    token = csrf_of(browser.get(location))
    deleted = browser.post(f"{location}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/worklist"
    assert "The analysis and its images were deleted." in browser.get("/worklist").text
    assert browser.get(location).status_code == 404


def test_revoked_key_ends_the_browser_session(browser: TestClient) -> None:
    keys = browser.app.state.keys  # type: ignore[attr-defined]
    key = keys.create("nurse")
    sign_in(browser, key)
    page = browser.get("/upload")
    assert page.status_code == 200 and "Signed in with key <strong>nurse</strong>" in page.text
    keys.revoke(key[:12])
    assert browser.get("/upload").headers["location"] == "/signin"
    assert "Your sign-in has ended" in browser.get("/signin").text
    assert browser.get("/upload").status_code == 303


def test_sign_out_ends_the_session(browser: TestClient) -> None:
    sign_in(browser)
    token = csrf_of(browser.get("/upload"))
    response = browser.post("/signout", data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert "You have signed out." in browser.get("/signin").text
    assert browser.get("/upload").status_code == 303


def test_sessions_survive_a_restart_with_the_kept_secret(settings: Settings) -> None:
    with TestClient(create_app(settings), follow_redirects=False) as first:
        sign_in(first)
        cookie = first.cookies[SESSION_COOKIE]
    secret_file = settings.data_dir / SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    with TestClient(create_app(settings), follow_redirects=False) as second:
        second.cookies.set(SESSION_COOKIE, cookie)
        assert second.get("/upload").status_code == 200
        payload, issued, signature = cookie.split(".")
        second.cookies.clear()
        second.cookies.set(SESSION_COOKIE, f"{payload}.{issued}.{signature[:-2]}AA")
        assert second.get("/upload").status_code == 303

    configured = settings.model_copy(
        update={
            "data_dir": settings.data_dir.parent / "other",
            "session_secret": SecretStr("a-configured-secret-of-some-length"),
        }
    )
    with TestClient(create_app(configured), follow_redirects=False) as third:
        third.cookies.set(SESSION_COOKIE, cookie)
        assert third.get("/upload").status_code == 303
        sign_in(third)
        assert third.get("/upload").status_code == 200
    assert not (configured.data_dir / SECRET_FILE).exists()


def test_session_signer_refuses_altered_and_old_tokens() -> None:
    signer = SessionSigner("s" * 32, max_age_seconds=60)
    token = signer.dumps({"csrf": "abc"}, now=1000)
    assert signer.loads(token, now=1030) == {"csrf": "abc"}
    assert signer.loads(token, now=1061) is None
    assert SessionSigner("t" * 32, 60).loads(token, now=1030) is None
    payload, issued, signature = token.split(".")
    assert signer.loads(f"{payload}.{int(issued) + 50}.{signature}", now=1030) is None
    assert signer.loads("garbage", now=1030) is None
    with pytest.raises(ValueError, match="at least 16"):
        SessionSigner("short", 60)


def test_pages_without_authentication_show_a_warning(settings: Settings) -> None:
    open_settings = settings.model_copy(update={"auth_enabled": False})
    with TestClient(create_app(open_settings), follow_redirects=False) as client:
        page = client.get("/upload")
        assert page.status_code == 200
        assert "Authentication is off." in page.text
        assert "Sign out" not in page.text
        assert client.get("/signin").headers["location"] == "/upload"
        assert client.get("/worklist").status_code == 200


def test_model_page_tolerates_a_small_card_and_serves_bundle_plots(
    browser: TestClient, settings: Settings, model_store: Path, tmp_path: Path
) -> None:
    sign_in(browser)
    page = browser.get("/model")
    assert page.status_code == 200
    assert "ich-compact" in page.text and "version 0.0.2" in page.text
    assert "Tiny untrained test model." in page.text
    assert page.text.count("Not available</div>") == 3
    assert "Test split" in page.text and "0.50" in page.text and "0.40 to 0.60" in page.text

    store = tmp_path / "store"
    shutil.copytree(model_store / "ich-compact" / "0.0.2", store / "ich-compact" / "0.0.2")
    plot = cv2.imencode(".png", np.full((20, 30, 3), 200, np.uint8))[1].tobytes()
    (store / "ich-compact" / "0.0.2" / "roc_test.png").write_bytes(plot)
    with TestClient(
        create_app(settings.model_copy(update={"model_store": store})), follow_redirects=False
    ) as client:
        sign_in(client)
        assert 'src="/model/plots/roc_test.png"' in client.get("/model").text
        served = client.get("/model/plots/roc_test.png")
        assert served.status_code == 200 and served.content == plot
        assert client.get("/model/plots/calibration_test.png").status_code == 404
        assert client.get("/model/plots/model_card.png").status_code == 404


def test_unexpected_errors_show_a_page_without_the_trace(
    browser: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(prediction_id: str) -> Prediction:
        raise RuntimeError("internal detail that must not reach the browser")

    sign_in(browser)
    monkeypatch.setattr(browser.app.state.predictions, "get", broken)  # type: ignore[attr-defined]
    response = browser.get(f"/predictions/{uuid.uuid4()}")
    assert response.status_code == 500
    assert_html_page(response)
    assert "Something went wrong on the server" in alert_text(response)
    assert "internal detail" not in response.text and "Traceback" not in response.text


def test_pages_without_a_model_say_so(settings: Settings, tmp_path: Path) -> None:
    empty = settings.model_copy(update={"model_store": tmp_path / "no_models"})
    with TestClient(create_app(empty), follow_redirects=False) as client:
        sign_in(client)
        upload_page = client.get("/upload")
        assert upload_page.status_code == 200 and "No model is loaded." in upload_page.text
        model_page = client.get("/model")
        assert model_page.status_code == 503
        assert_html_page(model_page)
        assert "is not loaded" in alert_text(model_page)


def upload_study(client: TestClient, files: list[tuple[str, bytes]], **fields: str) -> httpx.Response:
    token = csrf_of(client.get("/upload"))
    return client.post(
        "/studies/upload",
        data={"csrf_token": token, **fields},
        files=[("files", item) for item in files],
    )


def wait_for_job(client: TestClient, page: str, seconds: float = 120.0) -> dict[str, object]:
    """The job of a study page, as its page follows it, once it is done or failed."""
    deadline = time.monotonic() + seconds
    while True:
        job: dict[str, object] = client.get(f"{page}/job").json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


@pytest.mark.data
def test_study_upload_shows_the_study_page(browser: TestClient) -> None:
    from tests.app.conftest import DATA_DIR
    from tests.support.dicom_series import patient_jpegs, series_from_jpegs

    files = series_from_jpegs(patient_jpegs(DATA_DIR, "050")[10:16])
    sign_in(browser)
    upload_page = browser.get("/upload")
    assert 'id="study-upload-form"' in upload_page.text and "multiple" in upload_page.text
    response = upload_study(browser, [*files, ("notes.txt", b"hello")])
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert re.fullmatch(r"/studies/[0-9a-f-]{36}", location)
    assert wait_for_job(browser, location)["status"] == "done"
    page = browser.get(location)
    assert page.status_code == 200
    assert_html_page(page)
    assert ("Haemorrhage suspected" in page.text) != ("No haemorrhage detected" in page.text)
    assert "SERIES-TEST" in page.text and "data-aggregation>max<" in page.text
    assert "How this study decision is made" in page.text
    assert "A study is flagged when the highest slice probability reaches the study threshold" in page.text
    assert page.text.count('<li data-index="') == 6
    assert "notes.txt</strong>: not a DICOM file" in page.text
    assert "<script>" not in page.text and " style=" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("overlay_000.png", "slice_005.png"):
        image = browser.get(f"{location}/{name}")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    report = browser.get(f"{location}/report.pdf")
    assert report.headers["content-disposition"].startswith('attachment; filename="ich-study-report-')
    from pypdf import PdfReader

    report_text = " ".join(
        " ".join(page.extract_text() for page in PdfReader(io.BytesIO(report.content)).pages).split()
    )
    assert (
        "How this study decision is made. A study is flagged when the highest slice probability"
        in report_text
    )
    worklist = browser.get("/worklist")
    assert f'data-study-id="{location.rsplit("/", 1)[1]}"' in worklist.text
    assert "1 study" in worklist.text

    token = csrf_of(page)
    deleted = browser.post(f"{location}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert browser.get(location).status_code == 404


def test_study_upload_errors_show_on_the_form(browser: TestClient) -> None:
    sign_in(browser)
    response = upload_study(browser, [("notes.txt", b"hello")])
    assert response.status_code == 422
    assert 'id="study-upload-error"' in response.text
    assert "No CT image slices were found" in response.text
    token = csrf_of(browser.get("/upload"))
    refused = browser.post(
        "/studies/upload", data={"csrf_token": "wrong" + token}, files=[("files", ("a", b"x"))]
    )
    assert refused.status_code == 403


def test_model_page_shows_the_sensitivity_on_an_unseen_collection(
    browser: TestClient, settings: Settings, model_store: Path, tmp_path: Path
) -> None:
    sign_in(browser)
    assert "On a collection it never saw" not in browser.get("/model").text  # the tiny card has none

    store = tmp_path / "store"
    bundle = store / "ich-compact" / "0.0.2"
    shutil.copytree(model_store / "ich-compact" / "0.0.2", bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    card["metrics"]["external_bhsd_seg"] = {
        "slices": 52,
        "slices_flagged": 45,
        "sensitivity": 0.8654,
        "sensitivity_ci95": [0.7473, 0.9332],
        "scans": 38,
        "scans_flagged": 32,
        "scan_sensitivity": 0.8421,
        "scan_sensitivity_ci95": [0.6958, 0.9256],
    }
    card["robustness"] = {
        "n": 9,
        "corner_text": {"mean_abs_change": 0.0007, "max_abs_change": 0.085, "flip_rate": 0.0},
    }
    (bundle / "model_card.json").write_text(json.dumps(card))
    with TestClient(
        create_app(settings.model_copy(update={"model_store": store})), follow_redirects=False
    ) as client:
        sign_in(client)
        page = client.get("/model")
        assert page.status_code == 200
        section = page.text[page.text.index("On a collection it never saw") :]
        assert "45 of 52" in section and "0.87" in section and "0.75 to 0.93" in section
        assert "32 of 38" in section and "0.84" in section and "0.70 to 0.93" in section
        assert "Annotation text in the corners" in section and "0.001" in section
