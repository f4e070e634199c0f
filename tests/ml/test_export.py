from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ml.export import external_sensitivity, training_stages


def _card(reproduce: str, epochs: int, seconds: float, init_from: str | None, **extra: Any) -> dict[str, Any]:
    training: dict[str, Any] = {"config": {"init_from": init_from}, "epochs_run": epochs, "seconds": seconds}
    training.update(extra)
    return {"reproduce": reproduce, "training": training}


def _write(bundle: Path, card: dict[str, Any]) -> None:
    bundle.mkdir(parents=True)
    (bundle / "model_card.json").write_text(json.dumps(card), encoding="utf-8")


def test_a_model_trained_from_scratch_has_no_stages() -> None:
    assert training_stages(_card("python -m ml.train --name a", 10, 60.0, None)) is None


def test_stages_follow_the_whole_chain_of_earlier_bundles(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _write(first, _card("python -m ml.train --name a", 26, 2496.9, None))
    _write(
        second,
        _card(
            f"python -m ml.train --name a --init-from {first}/model.keras", 30, 2216.0, f"{first}/model.keras"
        ),
    )
    third = _card(
        f"python -m ml.train --name a --init-from {second}/model.keras", 27, 2037.2, f"{second}/model.keras"
    )

    stages = training_stages(third)

    assert stages is not None
    assert [stage["command"] for stage in stages] == [
        f"python -m ml.train --name a --output {first}",
        f"python -m ml.train --name a --init-from {first}/model.keras --output {second}",
        f"python -m ml.train --name a --init-from {second}/model.keras",
    ]
    assert [stage["epochs_run"] for stage in stages] == [26, 30, 27]
    assert [stage["seconds"] for stage in stages] == [2496.9, 2216.0, 2037.2]


def test_an_earlier_bundles_recorded_stages_are_taken_as_they_are(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    recorded = [
        {"command": "python -m ml.train --name a --output elsewhere", "epochs_run": 5, "seconds": 10.0},
        {
            "command": "python -m ml.train --name a --init-from elsewhere/model.keras",
            "epochs_run": 6,
            "seconds": 12.0,
        },
    ]
    _write(earlier, _card("ignored", 6, 12.0, "elsewhere/model.keras", stages=recorded))
    card = _card("python -m ml.train --name a --init-from earlier", 7, 14.0, f"{earlier}/model.keras")

    stages = training_stages(card)

    assert stages == [
        *recorded,
        {"command": "python -m ml.train --name a --init-from earlier", "epochs_run": 7, "seconds": 14.0},
    ]


def test_a_missing_earlier_card_gives_no_stages(tmp_path: Path) -> None:
    assert training_stages(_card("x", 1, 1.0, str(tmp_path / "gone" / "model.keras"))) is None


def test_without_bhsd_seg_there_is_no_unseen_collection_figure(tmp_path: Path) -> None:
    # The bundle is not read when the collection is missing.
    assert external_sensitivity(None, tmp_path) is None  # type: ignore[arg-type]
