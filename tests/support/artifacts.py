"""Figures the reliability tests measure, merged into ``test-artifacts/reliability.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ICH_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))


def record(section: str, figures: dict[str, Any]) -> Path:
    """Replace ``section`` of the reliability figures with ``figures``; returns the file's path."""
    path = ARTIFACTS / "reliability.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        current = json.loads(path.read_text())
    except (OSError, ValueError):
        current = {}
    current[section] = figures
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path
