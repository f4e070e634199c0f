"""Slice inference: the loaded classifiers and segmentation models, preprocess -> predict -> results.

:class:`SliceClassifier` classifies and explains slices (probability, Grad-CAM heat map and
overlay) in one compiled call per batch. The segmentation model (:class:`SliceSegmenter`), when
one is loaded, runs on the same preprocessed batch and outlines possible haemorrhage by subtype. A
multitask model (card ``"kind": "multitask"``) outlines the slices itself: its mask and subtype
heads come out of the same compiled call as its probability and Grad-CAM, and no segmentation
model runs for it. Which models are loaded and which serve is :mod:`app.services.registry`'s.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from app.core.labels import Label
from app.services.operating_points import OperatingPointInUse
from app.services.parallel import parallel_map
from ml.data.imaging import DecodedImage
from ml.data.preprocessing import preprocess
from ml.data.scope import ScopeThresholds
from ml.explain.gradcam import GradCam, GradCamOutput, overlay_heatmap
from ml.model_card import CLASSIFICATION_KIND, MULTITASK_KIND, ModelCard
from ml.model_io import CARD_FILE, ModelBundle
from ml.models.folding import fold_batch_norms
from ml.segmenter import (
    SEGMENTATION_OUTPUTS,
    Outlining,
    SegmentationResult,
    Segmenter,
    load_segmenter,
    segmenter_from_bundle,
)


@dataclass
class SliceSegmentation:
    """One slice's outline by subtype (class map at the uploaded image's size) and its model."""

    model_name: str
    model_version: str
    result: SegmentationResult


@dataclass
class SliceResult:
    """Everything one slice's analysis produced."""

    probability: float
    label: Label
    threshold: float
    # Where the threshold came from: "model card default" or the site operating point's description.
    operating_point: str
    model_name: str
    model_version: str
    decoded: DecodedImage
    heatmap: np.ndarray
    overlay: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)
    segmentation: SliceSegmentation | None = None
    # The head on the uploaded image as preprocessing found it, for the scope check (None: not found,
    # or found at another threshold than the scope check's).
    head_mask: np.ndarray | None = None

    @property
    def width(self) -> int:
        return int(self.decoded.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.decoded.pixels.shape[0])


class PreparedSlice(NamedTuple):
    """One slice preprocessed for the classifier."""

    image: np.ndarray
    geometry: Any
    # The head as preprocessing found it, when at the scope check's threshold (else None).
    head_mask: np.ndarray | None


def _milliseconds_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class SliceSegmenter:
    """One loaded segmentation bundle: outlines haemorrhage by subtype on preprocessed slices."""

    def __init__(self, segmenter: Segmenter, path: Path) -> None:
        self.segmenter = segmenter
        self.path = Path(path)
        self.config = segmenter.config
        # One forward pass at a time, as for the classifier.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: Path) -> SliceSegmenter:
        """Load the segmentation bundle in ``model_dir`` (:func:`ml.segmenter.load_segmenter`)."""
        return cls(load_segmenter(model_dir, fold=True), model_dir)

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> SliceSegmenter:
        """The segmenter of a loaded segmentation bundle, served with batch norms folded."""
        return cls(segmenter_from_bundle(bundle, fold=True), bundle.path)

    @property
    def name(self) -> str:
        return self.segmenter.name

    @property
    def version(self) -> str:
        return self.segmenter.version

    @property
    def card(self) -> dict[str, Any]:
        """The card as written (the API's answer, the reports' source)."""
        return self.segmenter.card

    @property
    def model_card(self) -> ModelCard:
        return self.segmenter.model_card

    @property
    def blood_threshold(self) -> float:
        return self.segmenter.blood_threshold

    def segment(self, batch: np.ndarray, geometries: list[Any]) -> list[SliceSegmentation]:
        """Class maps on the original image grids, and subtype probabilities, for a batch."""
        with self._lock:
            masks, subtypes = self.segmenter.probabilities(batch)
        return outline_batch(self.segmenter.outlining, masks, subtypes, geometries, self.name, self.version)


def outline_batch(
    outlining: Outlining,
    masks: np.ndarray,
    subtypes: np.ndarray,
    geometries: list[Any],
    model_name: str,
    model_version: str,
) -> list[SliceSegmentation]:
    """A batch's outlines from its mask and subtype heads, each on its own image's grid."""
    # Class maps back onto each image's grid: per-slice image work, side by side.
    results = parallel_map(
        lambda index: outlining.result(masks[index], subtypes[index], geometries[index]), range(len(masks))
    )
    return [SliceSegmentation(model_name, model_version, result) for result in results]


class SliceClassifier:
    """One loaded model bundle, ready to classify and explain slices.

    The shape follows ``_preprocess -> _predict -> _postprocess`` with one public
    :meth:`predict`; the forward pass and Grad-CAM run as a single compiled call. A multitask
    bundle (card ``"kind": "multitask"``) also outlines the slices from its own mask and subtype
    heads, computed in that same call, post-processed with its card's ``blood_threshold`` and
    ``min_component_px``.

    Raises:
        DataError: a multitask card lacks the outline fields (:meth:`ml.segmenter.Outlining.from_card`).
        ValueError: the model lacks a layer or output the card promises.
    """

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.config = bundle.preprocess_config
        self.outlining: Outlining | None = None
        if bundle.model_card.kind == MULTITASK_KIND:
            self.outlining = Outlining.from_card(bundle.model_card, bundle.path / CARD_FILE)
        # Served through an inference copy with batch normalisation folded into the convolutions:
        # the same outputs as the trained model, one pass over each activation map fewer.
        self.model = fold_batch_norms(bundle.model)
        self.gradcam = GradCam(self.model, bundle.gradcam_layer)
        # The card's thresholds, read once; they decide until the site's own are applied
        # (ModelRegistry.use_operating_point).
        self.card_operating_point = OperatingPointInUse.from_card(bundle.card)
        self.operating_point = self.card_operating_point
        # With outlines a multitask model's call computes its decoder too; without them
        # (segment=false) the plain call above leaves the decoder out.
        self.outlining_gradcam = (
            GradCam(self.model, bundle.gradcam_layer, extra_outputs=SEGMENTATION_OUTPUTS)
            if self.outlining is not None
            else None
        )
        # Concurrent requests share one graph; a lock keeps TensorFlow's threads from
        # oversubscribing two cores (batching happens within a request).
        self._lock = threading.Lock()
        self.warm_up()

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def threshold(self) -> float:
        """The slice threshold decisions are made with (the operating point's)."""
        return self.operating_point.slice.value

    @property
    def card(self) -> dict[str, Any]:
        """The card as written (the API's answer, the reports' source)."""
        return self.bundle.card

    @property
    def model_card(self) -> ModelCard:
        return self.bundle.model_card

    @property
    def kind(self) -> str:
        """``"multitask"`` when the model outlines slices itself, else ``"classification"``."""
        return MULTITASK_KIND if self.outlining is not None else CLASSIFICATION_KIND

    @property
    def outlines_itself(self) -> bool:
        """Whether the slices' outlines come from this model's own heads (no segmentation model)."""
        return self.outlining is not None

    def warm_up(self) -> None:
        """Trace the compiled functions once so the first request is not slow."""
        size = self.config.image_size
        blank = np.zeros((1, size, size, 1), np.float32)
        self.gradcam(blank, self.threshold)
        if self.outlining_gradcam is not None:
            self.outlining_gradcam.explain(blank, self.threshold)

    def _preprocess(self, decoded: DecodedImage) -> PreparedSlice:
        result = preprocess(decoded.pixels, self.config)
        shared = self.config.head_threshold == ScopeThresholds.head_threshold
        return PreparedSlice(result.image, result.geometry, result.head_mask if shared else None)

    def _predict(self, batch: np.ndarray, outline: bool = False) -> GradCamOutput:
        gradcam = self.outlining_gradcam if outline and self.outlining_gradcam is not None else self.gradcam
        with self._lock:
            return gradcam.explain(batch, self.threshold)

    def _postprocess(
        self,
        decoded: DecodedImage,
        probability: float,
        heatmap: np.ndarray,
        geometry: Any,
        timings: dict[str, float],
    ) -> SliceResult:
        started = time.perf_counter()
        size = self.config.image_size
        # Heat map: layer grid -> model input grid -> original image grid.
        input_heatmap = cv2.resize(heatmap, (size, size), interpolation=cv2.INTER_LINEAR)
        original_heatmap = np.clip(geometry.to_original(input_heatmap), 0.0, 1.0)
        overlay = overlay_heatmap(decoded.pixels, original_heatmap)
        timings["postprocess"] = _milliseconds_since(started)
        threshold = self.operating_point.slice
        return SliceResult(
            probability=float(probability),
            label=Label.decided(threshold.flags(probability)),
            threshold=threshold.value,
            operating_point=threshold.source,
            model_name=self.name,
            model_version=self.version,
            decoded=decoded,
            heatmap=original_heatmap,
            overlay=overlay,
            timings_ms=timings,
        )

    def predict(
        self, decoded: DecodedImage, segmenter: SliceSegmenter | None = None, segment: bool = True
    ) -> SliceResult:
        """Classify and explain one decoded slice (and outline it: see :meth:`predict_many`)."""
        return self.predict_many([decoded], segmenter, segment)[0]

    def outlines(self, segmenter: SliceSegmenter | None = None, segment: bool = True) -> bool:
        """Whether :meth:`predict_many` with these arguments outlines the slices."""
        return segment and (self.outlines_itself or segmenter is not None)

    def predict_many(
        self, images: list[DecodedImage], segmenter: SliceSegmenter | None = None, segment: bool = True
    ) -> list[SliceResult]:
        """Classify and explain several slices in one batched pass.

        With ``segment`` the slices are outlined too. A multitask model outlines them from its own
        heads, in the same pass, and ``segmenter`` is not run. Otherwise the ``segmenter``, when
        one is given, outlines them: on the classifier's preprocessed batch when both models
        preprocess alike, else preprocessed again for the segmenter.
        """
        if not images:
            return []
        own_outlines = segment and self.outlines_itself
        if not segment or own_outlines:
            segmenter = None
        started = time.perf_counter()
        prepared = parallel_map(self._preprocess, images)
        preprocess_ms = _milliseconds_since(started)
        batch = np.stack([item.image for item in prepared])
        started = time.perf_counter()
        explained = self._predict(batch, outline=own_outlines)
        model_ms = _milliseconds_since(started)
        started = time.perf_counter()
        segmentations = self._outline(images, prepared, batch, explained, own_outlines, segmenter)
        segmentation_ms = _milliseconds_since(started)
        # Each slice's share of the batch's steps; its post-processing is its own.
        shares = {"preprocess": preprocess_ms / len(images), "model_and_gradcam": model_ms / len(images)}
        if own_outlines or segmenter is not None:
            shares["segmentation"] = segmentation_ms / len(images)

        def finish(index: int) -> SliceResult:
            result = self._postprocess(
                images[index],
                float(explained.probabilities[index]),
                explained.heatmaps[index],
                prepared[index].geometry,
                dict(shares),
            )
            result.segmentation = segmentations[index]
            result.head_mask = prepared[index].head_mask
            return result

        return parallel_map(finish, range(len(images)))

    def _outline(
        self,
        images: list[DecodedImage],
        prepared: list[PreparedSlice],
        batch: np.ndarray,
        explained: GradCamOutput,
        own_outlines: bool,
        segmenter: SliceSegmenter | None,
    ) -> list[SliceSegmentation | None]:
        """The slices' outlines: from this model's own heads, from ``segmenter``, or none."""
        geometries = [item.geometry for item in prepared]
        if own_outlines and self.outlining is not None:
            # Only the post-processing is left: the heads ran in the model's pass.
            return list(
                outline_batch(
                    self.outlining,
                    explained.outputs["mask"],
                    explained.outputs["subtypes"],
                    geometries,
                    self.name,
                    self.version,
                )
            )
        if segmenter is None:
            return [None] * len(images)
        if segmenter.config != self.config:
            # The segmenter preprocesses otherwise: the slices are prepared again for it.
            again = parallel_map(lambda decoded: preprocess(decoded.pixels, segmenter.config), images)
            batch = np.stack([item.image for item in again])
            geometries = [item.geometry for item in again]
        return list(segmenter.segment(batch, geometries))
