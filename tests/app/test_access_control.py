"""Access control: every route refuses strangers, keys are hashed, uploads are rate limited.

Revocation taking effect at once is proved in ``tests/app/test_cli.py::test_keys_create_list_revoke``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.config import Settings
from app.core.ratelimit import RateLimited, RateLimiter
from app.db import ApiKey
from app.main import create_app
from tests.support import hostile
from tests.support.artifacts import record
from tests.support.dicom_series import patient_jpegs, series_from_jpegs

WRONG_KEY = "ich_" + "x" * 43
# Routes anyone may call: probes, metrics (counts only), the sign-in page, the API's own
# documentation and the static assets. "/" only redirects to the upload page.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/signin"),
    ("POST", "/signin"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/"),
    ("GET", "/static"),
}
PATH_VALUES = {
    "prediction_id": str(uuid.uuid4()),
    "study_id": str(uuid.uuid4()),
    "file_name": "original.png",
    "name": "ich-compact",
    "version": "0.0.2",
    "plot_name": "roc_test",
}


@pytest.fixture
def settings(tmp_path: Path, model_store: Path, api_key: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        model_store=model_store,
        default_model="ich-compact",
        api_keys=api_key,
        max_upload_mb=2,
    )


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    """A client with no credentials at all (no header, no cookie)."""
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


def registered_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the app answers, from its router (included routers and mounts too)."""
    routes = []
    for route in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        path = route.path
        assert path is not None
        methods = sorted(route.methods or {"GET"})
        routes += [(method, path) for method in methods if method != "HEAD"]
    return routes


def concrete(path: str) -> str:
    if path == "/static":
        return "/static/css/app.css"
    return re.sub(r"\{(\w+)\}", lambda match: PATH_VALUES[match.group(1)], path)


def refused(response: object, method: str, path: str) -> bool:
    status = response.status_code  # type: ignore[attr-defined]
    if path.startswith("/api/"):
        return status in (401, 403)
    # A page: to the sign-in page, or a refused form (no session, so no CSRF token).
    location = response.headers.get("location", "")  # type: ignore[attr-defined]
    return (status == 303 and location.startswith("/signin")) or status == 403


def test_every_route_except_the_public_ones_refuses_strangers(app_client: TestClient) -> None:
    routes = registered_routes(app_client)
    assert ("POST", "/api/v1/predictions") in routes and ("GET", "/worklist") in routes
    protected = [(method, path) for method, path in routes if (method, path) not in PUBLIC]
    assert len(protected) >= 20
    for method, path in protected:
        url = concrete(path)
        anonymous = app_client.request(method, url)
        wrong_key = app_client.request(method, url, headers={"Authorization": f"Bearer {WRONG_KEY}"})
        forged_cookie = app_client.request(method, url, cookies={"ich_session": "e30.1700000000.forged"})
        for response in (anonymous, wrong_key, forged_cookie):
            assert refused(response, method, path), (method, path, response.status_code, response.text[:200])
        if path.startswith("/api/"):
            assert anonymous.status_code == 401 and wrong_key.status_code == 403
            assert "API key" in anonymous.json()["detail"]
    for method, path in PUBLIC:
        assert (method, path) in routes, f"{method} {path} is listed as public but not registered"
        if method == "GET":
            assert app_client.get(concrete(path)).status_code in (200, 303)
    record(
        "access_control",
        {
            "routes": len(routes),
            "protected_routes": len(protected),
            "public_routes": sorted(f"{method} {path}" for method, path in PUBLIC),
            "requests_refused": 3 * len(protected),
        },
    )


def test_keys_are_stored_as_sha256_digests(settings: Settings, app_client: TestClient) -> None:
    keys = app_client.app.state.keys  # type: ignore[attr-defined]
    key = keys.create("digest-check")
    with app_client.app.state.database.session() as session:  # type: ignore[attr-defined]
        stored = session.scalars(select(ApiKey).where(ApiKey.name == "digest-check")).one()
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert stored.prefix == key[:12] and key not in (stored.key_hash, stored.prefix)
    database_bytes = (settings.data_dir / "ich.sqlite3").read_bytes()
    assert key.encode() not in database_bytes


def test_keys_are_compared_in_constant_time(app_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    keys = app_client.app.state.keys  # type: ignore[attr-defined]
    key = keys.create("timing-check")
    calls: list[tuple[str, str]] = []
    compare = hmac.compare_digest

    def spy(left: str, right: str) -> bool:
        calls.append((left, right))
        return compare(left, right)

    monkeypatch.setattr("app.services.auth.hmac.compare_digest", spy)
    assert app_client.get("/api/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert any(digest in pair for pair in calls)
    calls.clear()
    wrong = key[:12] + "y" * (len(key) - 12)
    assert app_client.get("/api/v1/models", headers={"Authorization": f"Bearer {wrong}"}).status_code == 403
    assert calls, "a wrong key with a known prefix must still be compared with compare_digest"


def test_security_headers_on_pages_api_and_errors(app_client: TestClient, api_key: str) -> None:
    signin = app_client.get("/signin")
    policy = signin.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert signin.headers["x-content-type-options"] == "nosniff"
    for response in (
        app_client.get("/healthz"),
        app_client.get("/api/v1/predictions"),
        app_client.get("/no-such-page"),
        app_client.post(
            "/api/v1/predictions", content=b"x" * (3 * 1024 * 1024), headers={"Content-Type": "image/png"}
        ),
        app_client.get("/static/css/app.css"),
    ):
        assert response.headers.get("x-content-type-options") == "nosniff", response.request.url


def test_uploaded_content_is_only_served_as_png_or_pdf(
    app_client: TestClient, api_key: str, png_bytes: bytes
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    created = app_client.post(
        "/api/v1/predictions", files={"file": ("evil.html", png_bytes, "text/html")}, headers=headers
    ).json()
    types = {
        "original": "image/png",
        "overlay": "image/png",
        "heatmap": "image/png",
        "report": "application/pdf",
    }
    for link, content_type in types.items():
        response = app_client.get(created["links"][link], headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.headers["x-content-type-options"] == "nosniff"
    assert (
        app_client.get(created["links"]["report"], headers=headers)
        .headers["content-disposition"]
        .startswith("attachment")
    )
    # The stored original is a re-encoded PNG, never the bytes that were sent.
    original = app_client.get(created["links"]["original"], headers=headers).content
    assert original.startswith(b"\x89PNG")
    script = app_client.post(
        "/api/v1/predictions",
        files={"file": ("x.svg", b"<svg onload='alert(1)'/>", "image/svg+xml")},
        headers=headers,
    )
    assert script.status_code == 415


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/predictions/..%2F..%2Fich.sqlite3",
        "/api/v1/predictions/%2e%2e/original.png",
        "/api/v1/predictions/{prediction}/..%2F..%2F..%2Fich.sqlite3",
        "/api/v1/predictions/{prediction}/session_secret",
        "/api/v1/predictions/{prediction}/%2e%2e%2f%2e%2e%2fsession_secret",
        "/api/v1/predictions/{study}",
        "/api/v1/studies/{prediction}",
        "/api/v1/studies/..%2F..%2Fich.sqlite3",
        "/api/v1/studies/{study}/..%2Fich.sqlite3",
        "/api/v1/models/..%2F..%2Fetc/passwd/card",
        "/api/v1/models/ich-compact/..%2F..%2F..%2Fpyproject.toml/card",
    ],
)
def test_ids_in_urls_reach_no_other_record_or_file(
    app_client: TestClient, api_key: str, png_bytes: bytes, path: str
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    prediction = app_client.post("/api/v1/predictions", files={"file": ("a.png", png_bytes)}, headers=headers)
    assert prediction.status_code == 201
    url = path.format(prediction=prediction.json()["id"], study=uuid.uuid4())
    response = app_client.get(url, headers=headers)
    assert response.status_code == 404, (url, response.status_code)
    assert b"session" not in response.content.lower().replace(b"session_secret", b"")
    assert not response.content.startswith(b"SQLite")


def test_rate_limiter_counts_per_bucket_and_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    limiter.acquire("key:a", "ip:1")
    limiter.acquire("key:a", "ip:2")
    with pytest.raises(RateLimited) as refused_key:
        limiter.acquire("key:a", "ip:3")
    assert "this API key" in refused_key.value.detail and refused_key.value.retry_after == 1
    limiter.acquire("key:b", "ip:1")
    with pytest.raises(RateLimited) as refused_address:
        limiter.acquire("key:c", "ip:1")
    assert "this address" in refused_address.value.detail
    # A refused request takes no token: key c still has its whole burst.
    limiter.acquire("key:c", "ip:9")
    now[0] += 1.0
    limiter.acquire("key:a", "ip:3")
    assert RateLimiter(per_minute=0, burst=1).enabled is False
    with pytest.raises(ValueError, match="per_minute"):
        RateLimiter(per_minute=-1, burst=1)


def test_uploads_are_rate_limited_per_key_and_per_address(
    tmp_path: Path, model_store: Path, api_key: str, png_bytes: bytes
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        model_store=model_store,
        default_model="ich-compact",
        api_keys=api_key,
        rate_limit_per_minute=2,
        rate_limit_burst=2,
    )
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {api_key}"}
        for _ in range(2):
            assert (
                client.post(
                    "/api/v1/predictions", files={"file": ("a.png", png_bytes)}, headers=headers
                ).status_code
                == 201
            )
        limited = client.post("/api/v1/predictions", files={"file": ("a.png", png_bytes)}, headers=headers)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "Too many uploads" in limited.json()["detail"] and "Try again in" in limited.json()["detail"]
        assert client.get("/api/v1/predictions", headers=headers).json()["total"] == 2
        # Reading is not limited; another key from the same address is (per-address bucket).
        assert client.get("/api/v1/predictions", headers=headers).status_code == 200
        other_key = client.app.state.keys.create("second")  # type: ignore[attr-defined]
        other = client.post(
            "/api/v1/predictions",
            files={"file": ("a.png", png_bytes)},
            headers={"Authorization": f"Bearer {other_key}"},
        )
        assert other.status_code == 429 and "this address" in other.json()["detail"]
        study = client.post(
            "/api/v1/studies", files=[("files", ("a.dcm", b"x", "application/dicom"))], headers=headers
        )
        assert study.status_code == 429
        # The browser's upload form shares the limits and says so on the form.
        token = client.get("/signin").text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.post("/signin", data={"api_key": api_key, "csrf_token": token, "next": "/upload"})
        token = client.get("/upload").text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        page = client.post(
            "/upload", data={"csrf_token": token}, files={"file": ("a.png", png_bytes, "image/png")}
        )
        assert page.status_code == 429 and "Too many uploads" in page.text


def test_study_upload_logs_no_patient_identifiers(
    client: TestClient, caplog: pytest.LogCaptureFixture, dicom_bytes: bytes, data_dir: Path
) -> None:
    series = series_from_jpegs(patient_jpegs(data_dir, "050")[10:13])
    renamed = []
    for name, data in series:
        dataset = pydicom.dcmread(io.BytesIO(data))
        dataset.PatientName = "Roe^Richard"
        dataset.PatientID = "PID-271828"
        renamed.append((name, hostile.dicom_bytes_of(dataset)))
    with caplog.at_level(logging.DEBUG):
        created = client.post(
            "/api/v1/studies?wait=120",
            files=[("files", (name, data, "application/dicom")) for name, data in renamed],
        )
        assert created.status_code == 201, created.text
        assert created.json()["study"]["patient_id"] == "PID-271828"
        refused = client.post(
            "/api/v1/studies",
            files=[("files", ("a.dcm", hostile.dicom_without_pixels(renamed[0][1]), "application/dicom"))],
            data={"patient_id": "PID-271828"},
        )
        assert refused.status_code >= 400
    logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    for secret in ("Roe", "Richard", "PID-271828", "271828"):
        assert secret not in logged
