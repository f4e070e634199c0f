"""GET /metrics: Prometheus text with requests, latency, predictions, inference time and errors."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Settings
from app.main import create_app


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_predictions_and_errors(client: TestClient, png_bytes: bytes) -> None:
    created = client.post("/api/v1/predictions", files={"file": ("slice.png", png_bytes)})
    assert created.status_code == 201
    label = created.json()["label"]
    assert client.get(f"/api/v1/predictions/{uuid.uuid4()}").status_code == 404
    assert client.get("/api/v1/predictions", params={"page": 0}).status_code == 422

    response = client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)

    post = {"method": "POST", "route": "/api/v1/predictions"}
    assert value(found, "http_requests_total", **post, status="201") == 1.0
    assert value(found, "http_request_duration_seconds_count", **post) == 1.0
    assert value(found, "http_request_duration_seconds_bucket", **post, le="+Inf") == 1.0
    missing = {"method": "GET", "route": "/api/v1/predictions/{prediction_id}", "status": "404"}
    assert value(found, "http_requests_total", **missing) == 1.0

    model = {"model": "ich-compact", "version": "0.0.2"}
    assert value(found, "ich_predictions_total", label=label, **model) == 1.0
    assert value(found, "ich_model_inference_seconds_count", **model) == 1.0
    assert value(found, "ich_model_inference_seconds_sum", **model) > 0.0

    assert value(found, "ich_errors_total", type="NotFound") == 1.0
    assert value(found, "ich_errors_total", type="RequestValidationError") == 1.0
    # Route templates only: no raw path, id or query value becomes a label.
    assert "page=" not in response.text and str(created.json()["id"]) not in response.text


def test_unhandled_errors_are_counted_and_logged_as_500(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/explode", explode)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/explode").status_code == 500
        found = samples(client.get("/metrics").text)
    assert value(found, "ich_errors_total", type="RuntimeError") == 1.0
    assert value(found, "http_requests_total", method="GET", route="/explode", status="500") == 1.0
    lines = [record for record in caplog.records if record.name == "app.requests"]
    assert any(getattr(line, "error", None) == "RuntimeError" and line.status == 500 for line in lines)  # type: ignore[attr-defined]


def test_each_app_counts_alone(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first, TestClient(create_app(settings)) as second:
        first.get("/healthz")
        first.get("/healthz")
        second.get("/healthz")
        health = {"method": "GET", "route": "/healthz", "status": "200"}
        assert value(samples(first.get("/metrics").text), "http_requests_total", **health) == 2.0
        assert value(samples(second.get("/metrics").text), "http_requests_total", **health) == 1.0


def test_unknown_paths_share_one_label(client: TestClient) -> None:
    for path in ("/no/such/page", f"/patients/{uuid.uuid4()}"):
        assert client.get(path).status_code == 404
    text = client.get("/metrics").text
    assert "/no/such/page" not in text and "/patients/" not in text
    assert value(samples(text), "http_requests_total", method="GET", route="unmatched", status="404") == 2.0


def test_requests_refused_before_routing_keep_their_route(client: TestClient) -> None:
    too_large = b"\0" * (3 * 1024 * 1024)
    assert client.post("/api/v1/predictions", files={"file": ("big.png", too_large)}).status_code == 413
    assert client.delete("/healthz").status_code == 405
    found = samples(client.get("/metrics").text)
    assert (
        value(found, "http_requests_total", method="POST", route="/api/v1/predictions", status="413") == 1.0
    )
    assert value(found, "http_requests_total", method="DELETE", route="/healthz", status="405") == 1.0
