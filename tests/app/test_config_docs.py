"""The settings reference in docs/operations.md is generated from ``Settings`` and kept current."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import OPERATIONS_DOC, main, settings_reference, with_reference
from app.core.config import Settings


def test_operations_guide_lists_every_setting_as_generated() -> None:
    assert main(["config-docs", "--check"]) == 0, "run: python -m app.cli config-docs"
    document = OPERATIONS_DOC.read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        assert f"`ICH_{name.upper()}`" in document
        assert field.description, f"Settings.{name} needs a description for the reference"


def test_reference_shows_types_defaults_and_no_machine_paths() -> None:
    table = settings_reference()
    assert "| `ICH_LOG_FORMAT` | text \\| json | `text` |" in table
    assert "| `ICH_WORKERS` | integer | `1` |" in table
    assert "| `ICH_DATABASE_URL` | text, optional | (none) |" in table
    assert "`<project>/model_store`" in table
    assert str(Path(__file__).resolve().parents[2]) not in table


def test_config_docs_rewrites_only_between_the_markers(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    start, end = "<!-- settings-reference:start", "<!-- settings-reference:end -->"
    original = OPERATIONS_DOC.read_text(encoding="utf-8")
    head = original[: original.index(start)]
    path.write_text(
        head
        + original[original.index(start) : original.index("\n", original.index(start)) + 1]
        + "old table\n"
        + end
        + "\ntail\n"
    )
    assert main(["config-docs", "--check", "--path", str(path)]) == 1
    assert main(["config-docs", "--path", str(path)]) == 0
    updated = path.read_text(encoding="utf-8")
    assert updated.startswith(head) and updated.endswith(end + "\ntail\n") and "old table" not in updated
    assert main(["config-docs", "--check", "--path", str(path)]) == 0
    with pytest.raises(ValueError, match="markers"):
        with_reference("no markers here")
