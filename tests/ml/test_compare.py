"""The experiments table reads model cards."""

from __future__ import annotations

import json
from pathlib import Path

from ml.compare import table


def _entry(auc: float, low: float, high: float) -> dict[str, object]:
    return {
        "slice": {
            "metrics": {"auc": {"value": auc, "ci95": [low, high]}},
            "sensitivity_at_specificity_0.90": 0.5,
        }
    }


def test_table_has_one_row_per_bundle(tmp_path: Path) -> None:
    card = {
        "backbone": "compact",
        "preprocessing": {"clahe": True},
        "parameters": 1234,
        "training": {"epochs_run": 3, "seconds": 120.0},
        "cpu_latency_ms_per_slice": 5.0,
        "metrics": {
            "validation": {"all": _entry(0.8, 0.7, 0.9)},
            "test": {"ct_ich": _entry(0.91, 0.83, 0.99), "head_ct": _entry(0.75, 0.5, 0.9)},
        },
        "robustness": {"half_resolution": {"flip_rate": 0.03}},
    }
    bundle = tmp_path / "run"
    bundle.mkdir()
    (bundle / "model_card.json").write_text(json.dumps(card))
    (bundle / "model.keras").write_bytes(b"x" * 2048)
    lines = table([bundle]).splitlines()
    assert len(lines) == 3
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells[0] == "compact + CLAHE (run)"
    assert cells[1] == "1,234" and cells[3] == "3" and cells[4] == "2.0"
    assert cells[6] == "0.800"
    assert cells[7] == "0.910 (0.83-0.99)"
    assert cells[9] == "0.750 (0.50-0.90)"
    assert cells[10] == "0.030"
