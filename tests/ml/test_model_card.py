"""The typed model card: every shipped card reads, bad ones are refused with the field named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ml.errors import DataError, MissingDataFile
from ml.model_card import CARD_FILE, ModelCard, check_servable
from ml.model_io import read_model_card

STORE = Path(__file__).resolve().parents[2] / "model_store"
SHIPPED = sorted(path.parent for path in STORE.glob(f"*/*/{CARD_FILE}"))


def classifier_card(**fields: object) -> dict[str, object]:
    card: dict[str, object] = {
        "name": "ich-compact",
        "version": "9.0.0",
        "threshold": 0.4,
        "gradcam_layer": "features",
        "preprocessing": {"image_size": 64},
    }
    card.update(fields)
    return card


def write_card(folder: Path, card: dict[str, object]) -> Path:
    folder.mkdir(parents=True)
    (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    return folder


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda path: f"{path.parent.name}-{path.name}")
def test_every_shipped_card_reads_as_its_kind(model_dir: Path) -> None:
    card = read_model_card(model_dir)
    raw = json.loads((model_dir / CARD_FILE).read_text(encoding="utf-8"))

    assert (card.name, card.version) == (model_dir.parent.name, model_dir.name)
    assert card.raw == raw
    assert card.limitations and card.intended_use
    if raw.get("kind") == "segmentation":
        assert card.kind == "segmentation" and card.outlines
        assert card.blood_threshold == raw["blood_threshold"] and card.threshold is None
    elif raw.get("kind") == "multitask":
        assert card.outlines and card.blood_threshold == raw["blood_threshold"]
        assert card.threshold == raw["threshold"] and card.gradcam_layer == raw["gradcam_layer"]
        assert card.training.datasets == ["ct_ich", "head_ct", "phe_sich", "bhsd_seg"]
        results = {result.collection: result for result in card.study_results()}
        assert set(results) == set(raw["metrics"]["test"]["studies"])
        assert (
            results["ct_ich"].sensitivity.count
            == raw["metrics"]["test"]["studies"]["ct_ich"]["sensitivity"]["count"]
        )
    else:
        assert card.kind == "classification" and not card.outlines
        assert card.threshold == raw["threshold"] and card.gradcam_layer == raw["gradcam_layer"]
        assert card.training.datasets == ["head_ct", "ct_ich"]


def test_the_shipped_store_has_classifiers_of_both_versions_and_a_segmentation_model() -> None:
    found = {(path.parent.name, path.name) for path in SHIPPED}
    assert {
        ("ich-compact", "1.0.0"),
        ("ich-compact", "1.1.0"),
        ("ich-unet", "1.1.0"),
        ("ich-multitask", "1.0.0"),
        ("ich-multitask", "1.1.0"),
    } <= found


def test_the_outline_criterion_of_a_study_rule_is_a_positive_pixel_count() -> None:
    from ml.errors import DataError

    card = ModelCard.from_mapping(classifier_card(kind="multitask", study_outline_px=361))
    assert card.study_outline_px == 361
    assert ModelCard.from_mapping(classifier_card()).study_outline_px is None
    for bad in (0, -5, "many"):
        with pytest.raises(DataError, match="study_outline_px"):
            ModelCard.from_mapping(classifier_card(kind="multitask", study_outline_px=bad))


def test_a_multitask_card_is_a_classifier_that_outlines() -> None:
    card = ModelCard.from_mapping(
        classifier_card(kind="multitask", blood_threshold=0.5, min_component_px=4, subtypes=["epidural"])
    )
    check_servable(card.raw)
    assert card.kind == "multitask" and card.outlines
    assert (card.blood_threshold, card.min_component_px, card.subtypes) == (0.5, 4, ["epidural"])


def test_a_small_card_reads_with_empty_parts() -> None:
    card = ModelCard.from_mapping({"name": "m", "version": 2, "threshold": 0.2})
    assert card.version == "2" and card.kind == "classification"
    assert card.limitations == [] and card.metrics == {} and card.training.datasets is None
    assert card.get("threshold") == 0.2 and card.get("absent", "default") == "default"


@pytest.mark.parametrize("kind", [None, ""])
def test_a_card_without_a_kind_is_a_classifier(kind: object) -> None:
    assert ModelCard.from_mapping(classifier_card(kind=kind)).kind == "classification"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"threshold": "high"}, "threshold"),
        ({"limitations": "none"}, "limitations"),
        ({"training": {"epochs_run": "many"}}, "training.epochs_run"),
        ({"name": None}, "name"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_by_name(fields: dict[str, object], named: str) -> None:
    with pytest.raises(DataError, match=rf"card\.json is not a usable model card: {named}: "):
        ModelCard.from_mapping(classifier_card(**fields), "card.json")


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"name": "m", "version": "1", "threshold": 0.5}, "lacks the field 'gradcam_layer'"),
        (
            {"kind": "segmentation", "name": "u", "version": "1", "preprocessing": {}},
            r"lacks the field\(s\) \['blood_threshold', 'min_component_px'\]",
        ),
        (
            classifier_card(kind="multitask", min_component_px=4),
            r"lacks the field\(s\) \['blood_threshold'\]",
        ),
        (classifier_card(kind="detection"), "unknown kind 'detection'"),
    ],
)
def test_what_a_kind_needs_to_serve_is_checked(card: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_servable(card, "card.json")


def test_read_model_card_names_a_missing_or_unusable_card(tmp_path: Path) -> None:
    with pytest.raises(MissingDataFile, match="No model_card.json"):
        read_model_card(tmp_path)
    bad = write_card(tmp_path / "bad", classifier_card(parameters="many"))
    with pytest.raises(DataError, match="parameters"):
        read_model_card(bad)
    unchecked = write_card(tmp_path / "small", {"name": "m", "version": "1"})
    assert read_model_card(unchecked, servable=False).threshold is None


def test_the_registry_skips_a_bundle_of_an_unknown_kind_before_loading_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.services.registry import ModelRegistry

    bundle = write_card(
        tmp_path / "ich-detector" / "1.0.0", classifier_card(name="ich-detector", kind="boxes")
    )
    (bundle / "model.keras").write_bytes(b"not a model: never opened")
    with caplog.at_level(logging.WARNING):
        registry = ModelRegistry.from_store(tmp_path, "ich-detector")
    assert not registry.ready
    assert "unknown kind 'boxes'" in caplog.text and "Could not load" not in caplog.text
    assert registry.find_card("ich-detector", "1.0.0") is None
    assert registry.loaded_card("ich-detector", "1.0.0") == {}
    assert registry.outline_model_card({"model": {"name": "ich-detector", "version": "1.0.0"}}) is None


def test_a_bundle_types_its_card_once_and_keeps_it_as_written() -> None:
    from ml.model_io import ModelBundle

    written = classifier_card(kind="multitask", blood_threshold=0.5, min_component_px=4)
    bundle = ModelBundle(model=None, card=written, path=Path("."))
    assert bundle.model_card.raw is written and bundle.kind == "multitask"
    assert (bundle.name, bundle.version, bundle.threshold) == ("ich-compact", "9.0.0", 0.4)
    with pytest.raises(DataError, match="model_card.json is not a usable model card: threshold"):
        ModelBundle(model=None, card=classifier_card(threshold=[0.4]), path=Path("."))
