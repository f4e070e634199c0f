"""API key management from the command line; revocation takes effect at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import main
from app.core.config import Settings, get_settings
from app.main import create_app


def test_keys_create_list_revoke(
    tmp_path: Path,
    model_store: Path,
    png_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ICH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        assert main(["keys", "create", "--name", "pacs-router"]) == 0
        key = capsys.readouterr().out.strip()
        assert key.startswith("ich_") and len(key) > 40
        assert main(["keys", "list"]) == 0
        listing = capsys.readouterr().out
        assert "pacs-router" in listing and key[:12] in listing and key not in listing

        settings = Settings(
            data_dir=tmp_path / "data", model_store=model_store, default_model="ich-compact", api_keys=""
        )
        with TestClient(create_app(settings)) as client:
            headers = {"Authorization": f"Bearer {key}"}
            assert client.get("/api/v1/predictions", headers=headers).status_code == 200
            assert main(["keys", "revoke", key[:12]]) == 0
            assert "Revoked 1" in capsys.readouterr().out
            refused = client.get("/api/v1/predictions", headers=headers)
            assert refused.status_code == 403
        assert main(["keys", "revoke", "abc"]) == 2
        assert "at least 6" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
