"""Start-up takes one synthetic slice through the analysis, and leaves no trace of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.services.predictions import PredictionService
from tests.app.conftest import API_KEY


def test_start_up_warms_the_whole_path_and_stores_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, png_bytes: bytes
) -> None:
    finished: list[Any] = []
    original = PredictionService._finish

    def spy(self: PredictionService, result: Any) -> Any:
        outcome = original(self, result)
        finished.append(outcome)
        return outcome

    monkeypatch.setattr(PredictionService, "_finish", spy)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {API_KEY}"
        # Before any request: the synthetic slice went through scope check and encoding.
        assert len(finished) == 1
        scope, files, _ = finished[0]
        assert scope.in_scope
        assert {"original.png", "overlay.png", "heatmap.png"} <= set(files)
        listing = client.get("/api/v1/predictions").json()
        assert listing["total"] == 0
        # Neither counted as a prediction nor as a model inference.
        samples = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith(("ich_predictions_total", "ich_model_inference_seconds_count"))
        ]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in samples) == 0.0
        # One real request is counted (the measure above can see one).
        assert client.post("/api/v1/predictions", files={"file": ("a.png", png_bytes)}).status_code == 201
        counted = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("ich_model_inference_seconds_count")
        ]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == 1.0
        assert client.get("/api/v1/predictions").json()["total"] == 1
    assert len(finished) == 2
    predictions_dir = Path(settings.resolved_storage_dir) / "predictions"
    assert len(list(predictions_dir.iterdir())) == 1
