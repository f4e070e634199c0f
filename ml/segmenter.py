"""Running the segmentation model: masks by subtype and subtype probabilities per slice.

The model sees the same preprocessed input as the classifier; its per-pixel probabilities
become a class-index mask on the model grid (blood where the summed subtype probability
reaches ``blood_threshold``, the likeliest subtype there, small specks removed), which is then
carried back onto the original image grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from ml.data.preprocessing import Geometry, PreprocessConfig
from ml.data.segmentation import SUBTYPE_COLOURS, SUBTYPES
from ml.errors import DataError
from ml.evaluation.segmentation import remove_small_components
from ml.model_card import CARD_FILE, MULTITASK_KIND, OUTLINE_FIELDS, SEGMENTATION_KIND, ModelCard
from ml.model_io import ModelBundle, load_bundle, read_model_card
from ml.models.folding import fold_batch_norms

__all__ = [
    "MULTITASK_KIND",
    "SEGMENTATION_KIND",
    "Outlining",
    "SegmentationResult",
    "Segmenter",
    "class_map_from_probabilities",
    "class_map_to_original",
    "contour_overlay",
    "load_segmenter",
]

# The model outputs a segmentation bundle's model has (a multitask model has them too).
SEGMENTATION_OUTPUTS = ("subtypes", "mask")


@dataclass
class SegmentationResult:
    """One slice's segmentation.

    ``class_map``: uint8 class indices (0 background, k = ``SUBTYPES[k - 1]``) on the grid
    it was asked for (the original image, or the model input); ``subtype_probabilities``
    from the subtype head.
    """

    class_map: np.ndarray
    subtype_probabilities: dict[str, float]
    # Outlined pixels on the model grid, whatever grid ``class_map`` is on: what the study rule's
    # outline criterion counts (``ml.evaluation.study_outline``).
    grid_blood_px: int = 0

    def area_px(self) -> dict[str, int]:
        counts = np.bincount(self.class_map.ravel(), minlength=len(SUBTYPES) + 1)
        return {name: int(counts[index + 1]) for index, name in enumerate(SUBTYPES)}

    @property
    def blood(self) -> np.ndarray:
        return self.class_map > 0


def class_map_from_probabilities(
    probabilities: np.ndarray, blood_threshold: float, min_component_px: int
) -> np.ndarray:
    """Class indices from an ``H x W x 6`` softmax: blood where ``1 - p(background)`` reaches
    the threshold, labelled with its likeliest subtype; components under ``min_component_px``
    pixels are dropped."""
    blood = (1.0 - probabilities[..., 0]) >= blood_threshold
    blood = remove_small_components(blood, min_component_px)
    subtype = 1 + np.argmax(probabilities[..., 1:], axis=-1)
    return np.where(blood, subtype, 0).astype(np.uint8)


def class_map_to_original(class_map: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Carry a class-index map from the model grid onto the original image grid.

    Each class's indicator is mapped with linear interpolation and the largest wins, which
    keeps outlines smooth instead of blocky when the original is larger than the input.
    """
    present = [int(k) for k in np.unique(class_map) if k > 0]
    original = np.zeros(geometry.original_shape, np.uint8)
    if not present:
        return original
    best = geometry.to_original((class_map == 0).astype(np.float32))
    # Outside the crop to_original gives 0 for every class: background there.
    top, bottom, left, right = geometry.crop_box
    outside = np.ones(geometry.original_shape, bool)
    outside[top:bottom, left:right] = False
    best[outside] = 1.0
    for k in present:
        score = geometry.to_original((class_map == k).astype(np.float32))
        wins = score > best
        original[wins] = k
        best = np.maximum(best, score)
    return original


@dataclass(frozen=True)
class Outlining:
    """How a model card turns per-pixel probabilities into a slice's outlines."""

    blood_threshold: float
    min_component_px: int

    @classmethod
    def from_card(
        cls, card: ModelCard | Mapping[str, Any], source: Path | str = "The model card"
    ) -> Outlining:
        """The card's ``blood_threshold`` and ``min_component_px``.

        Raises:
            DataError: ``source`` (the card file) lacks one of them, or names subtypes other
                than :data:`ml.data.segmentation.SUBTYPES`.
        """
        card = card if isinstance(card, ModelCard) else ModelCard.from_mapping(card, source)
        if card.blood_threshold is None or card.min_component_px is None:
            missing = [key for key in OUTLINE_FIELDS if getattr(card, key) is None]
            raise DataError(f"{source} lacks the field(s) {missing}.")
        if card.subtypes is not None and card.subtypes != list(SUBTYPES):
            raise DataError(
                f"{source} names the subtypes {card.subtypes}; this service knows {list(SUBTYPES)}."
            )
        return cls(card.blood_threshold, card.min_component_px)

    def result(
        self, mask: np.ndarray, subtypes: np.ndarray, geometry: Geometry | None = None
    ) -> SegmentationResult:
        """One slice's result from its per-class probabilities (``S x S x 6``) and subtype
        probabilities (5); with its geometry the class map is on the original image's grid."""
        class_map = class_map_from_probabilities(mask, self.blood_threshold, self.min_component_px)
        grid_blood_px = int(np.count_nonzero(class_map))
        if geometry is not None:
            class_map = class_map_to_original(class_map, geometry)
        return SegmentationResult(
            class_map=class_map,
            subtype_probabilities={name: round(float(subtypes[k]), 4) for k, name in enumerate(SUBTYPES)},
            grid_blood_px=grid_blood_px,
        )


class Segmenter:
    """A loaded segmentation bundle; thresholds come from its model card."""

    def __init__(self, model: keras.Model, card: ModelCard | Mapping[str, Any]) -> None:
        self.model = model
        self.model_card = card if isinstance(card, ModelCard) else ModelCard.from_mapping(card)
        # The card as written, for the readers of its untyped fields (reports, help texts).
        self.card = self.model_card.raw
        self.config = PreprocessConfig.from_dict(self.model_card.preprocessing)
        self.outlining = Outlining.from_card(self.model_card)
        self.blood_threshold = self.outlining.blood_threshold
        self.min_component_px = self.outlining.min_component_px
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
        self._forward = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])
        size = self.config.image_size
        self._forward(tf.zeros((1, size, size, 1), tf.float32))

    @property
    def name(self) -> str:
        return self.model_card.name

    @property
    def version(self) -> str:
        return self.model_card.version

    def probabilities(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mask probabilities N x S x S x 6, subtype probabilities N x 5)``."""
        outputs = self._forward(tf.convert_to_tensor(batch, tf.float32))
        return outputs["mask"].numpy(), outputs["subtypes"].numpy()

    def result(
        self, mask: np.ndarray, subtypes: np.ndarray, geometry: Geometry | None = None
    ) -> SegmentationResult:
        """One slice's result from its per-class probabilities (as :meth:`probabilities` gives
        them); with its geometry the class map is on the original image's grid."""
        return self.outlining.result(mask, subtypes, geometry)


def contour_overlay(class_map: np.ndarray, thickness: int | None = None) -> np.ndarray:
    """RGBA image (transparent except for each subtype's outline in its colour)."""
    height, width = class_map.shape
    thickness = thickness or max(1, round(min(height, width) / 256))
    overlay = np.zeros((height, width, 4), np.uint8)
    for index, name in enumerate(SUBTYPES, start=1):
        region = (class_map == index).astype(np.uint8)
        if not region.any():
            continue
        contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        colour = (*SUBTYPE_COLOURS[name], 255)
        cv2.drawContours(overlay, contours, -1, colour, thickness=thickness)
    return overlay


def load_segmenter(model_dir: Path, fold: bool = False) -> Segmenter:
    """Load a segmentation bundle: ``model.keras`` beside a card with ``"kind": "segmentation"``.

    With ``fold`` the model is the inference copy with batch normalisation folded into its
    convolutions (:func:`ml.models.folding.fold_batch_norms`): the same outputs, faster.

    Raises:
        MissingDataFile: the card or the model file is missing (a ``FileNotFoundError``).
        DataError: the card is not JSON, not a segmentation card, lacks a field the service needs,
            or names subtypes other than :data:`ml.data.segmentation.SUBTYPES` (a ``ValueError``).
    """
    card = read_model_card(model_dir)
    if card.kind != SEGMENTATION_KIND:
        raise DataError(
            f"{Path(model_dir) / CARD_FILE} is not a segmentation card (kind {card.get('kind')!r})."
        )
    return segmenter_from_bundle(load_bundle(model_dir, card), fold)


def segmenter_from_bundle(bundle: ModelBundle, fold: bool = False) -> Segmenter:
    """The segmenter of a loaded segmentation bundle (:func:`ml.model_io.load_bundle`).

    Raises:
        DataError: the card names subtypes other than :data:`ml.data.segmentation.SUBTYPES`.
    """
    Outlining.from_card(bundle.model_card, bundle.path / CARD_FILE)
    model = fold_batch_norms(bundle.model) if fold else bundle.model
    return Segmenter(model, bundle.model_card)
