"""Saving and loading model bundles: ``model.keras`` beside its ``model_card.json``.

Layout: ``<store>/<name>/<version>/{model.keras, model_card.json, *.png, split_manifest.json}``.
The card carries what serving needs (preprocessing, threshold, Grad-CAM layer) so the
service never hard-codes them.
"""

from __future__ import annotations

import json
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ml.data.preprocessing import PreprocessConfig
from ml.errors import DataError, MissingDataFile
from ml.model_card import CARD_FILE, ModelCard, check_servable

__all__ = [
    "CARD_FILE",
    "ModelBundle",
    "ModelCard",
    "discover_models",
    "load_bundle",
    "predict_probabilities",
    "read_card",
    "read_card_json",
    "read_model_card",
    "save_bundle",
    "version_key",
]

MODEL_FILE = "model.keras"


@dataclass
class ModelBundle:
    """A loaded model with the card that says how to use it.

    ``card`` is the card as written (what training and evaluation read and write);
    ``model_card`` is the same card typed, checked when the bundle is made.
    """

    model: keras.Model
    card: dict[str, Any]
    path: Path
    typed_card: InitVar[ModelCard | None] = None
    model_card: ModelCard = field(init=False)

    def __post_init__(self, typed_card: ModelCard | None) -> None:
        # A card read by read_model_card is checked already; any other is checked here.
        if typed_card is None:
            typed_card = ModelCard.from_mapping(self.card, Path(self.path) / CARD_FILE)
        self.model_card = typed_card

    @property
    def kind(self) -> str:
        """``"classification"``, ``"segmentation"`` or ``"multitask"``, as the card says."""
        return self.model_card.kind

    @property
    def name(self) -> str:
        return self.model_card.name

    @property
    def version(self) -> str:
        return self.model_card.version

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    @property
    def gradcam_layer(self) -> str:
        return str(self.card["gradcam_layer"])

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.card["preprocessing"])


def read_card_json(card_path: Path) -> dict[str, Any]:
    """The JSON object in a model card file.

    Raises:
        MissingDataFile: there is no such file (the folder is not a model bundle).
        DataError: the file is not a JSON object.
    """
    if not card_path.is_file():
        raise MissingDataFile(f"No {CARD_FILE} in {card_path.parent}.")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{card_path} is not valid JSON: {error}.") from error
    if not isinstance(card, dict):
        raise DataError(f"{card_path} holds a JSON {type(card).__name__}, not an object.")
    return card


def read_card(model_dir: Path) -> dict[str, Any]:
    """A classifier's card as written, with the fields serving needs (tools that rewrite it)."""
    card_path = Path(model_dir) / CARD_FILE
    card = read_card_json(card_path)
    for key in ("name", "version", "threshold", "gradcam_layer", "preprocessing"):
        if key not in card:
            raise DataError(f"{card_path} lacks the field {key!r}.")
    return card


def read_model_card(model_dir: Path, servable: bool = True) -> ModelCard:
    """The typed card of the bundle in ``model_dir``; with ``servable``, checked for what its kind
    needs to serve (:func:`ml.model_card.check_servable`).

    Raises:
        MissingDataFile: there is no card (the folder is not a model bundle).
        DataError: the card is not a JSON object, a field has the wrong type, its kind is
            unknown, or it lacks a field its kind needs.
    """
    card_path = Path(model_dir) / CARD_FILE
    data = read_card_json(card_path)
    if servable:
        check_servable(data, card_path)
    return ModelCard.from_mapping(data, card_path)


def load_bundle(model_dir: Path, card: ModelCard | None = None) -> ModelBundle:
    """Load ``model.keras`` and its card from ``model_dir``, a bundle of any kind.

    ``card``, when the caller has read it already (:func:`read_model_card`), is not read again.
    """
    model_dir = Path(model_dir)
    if card is None:
        card = read_model_card(model_dir)
    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise MissingDataFile(f"No {MODEL_FILE} in {model_dir}.")
    model = keras.saving.load_model(model_path, compile=False)
    return ModelBundle(model=model, card=card.raw, path=model_dir, typed_card=card)


def version_key(version: str) -> tuple[int | str, ...]:
    """Sort key so that 1.10.0 comes after 1.9.0."""
    return tuple(int(part) if part.isdigit() else part for part in version.split("."))


def discover_models(store: Path) -> dict[str, list[Path]]:
    """Model directories in ``store`` by name, versions oldest first."""
    found: dict[str, list[Path]] = {}
    store = Path(store)
    if not store.is_dir():
        return found
    for card_path in sorted(store.glob(f"*/*/{CARD_FILE}")):
        model_dir = card_path.parent
        if (model_dir / MODEL_FILE).is_file():
            found.setdefault(model_dir.parent.name, []).append(model_dir)
    for versions in found.values():
        versions.sort(key=lambda path: version_key(path.name))
    return found


def save_bundle(model: keras.Model, card: dict[str, Any], model_dir: Path) -> Path:
    """Write ``model.keras`` and ``model_card.json`` into ``model_dir``."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / MODEL_FILE)
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return model_dir


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Haemorrhage probabilities for preprocessed images (uint8 or float in [0, 1]), from a
    classifier or from the slice head of a multitask network."""
    data = images.astype(np.float32)
    if images.dtype == np.uint8:
        data /= 255.0
    outputs = model.predict(data, batch_size=batch_size, verbose=0)
    if isinstance(outputs, dict):
        outputs = outputs["probability"]
    return np.asarray(outputs).ravel()
