"""Model registry and slice inference: decode -> preprocess -> predict with Grad-CAM -> images.

The segmentation model, when one is loaded, runs in the same pass on the same preprocessed
batch and outlines possible haemorrhage by subtype. A multitask model (card ``"kind":
"multitask"``) outlines the slices itself: its mask and subtype heads come out of the same
compiled call as its probability and Grad-CAM, and no segmentation model runs for it.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from PIL.PngImagePlugin import PngInfo, putchunk

from app.core.errors import InvalidUpload, ModelUnavailable, NotFound, UnsupportedImage
from app.core.labels import Label
from app.services.details import OutlineModel
from app.services.operating_points import OperatingPointInUse
from ml.data.imaging import DecodedImage, ImageDecodeError, UnsupportedImageError, decode_image
from ml.data.preprocessing import preprocess
from ml.data.scope import ScopeThresholds
from ml.explain.gradcam import GradCam, GradCamOutput, overlay_heatmap
from ml.model_card import CLASSIFICATION_KIND, KINDS, MULTITASK_KIND, SEGMENTATION_KIND, ModelCard
from ml.model_io import CARD_FILE, ModelBundle, discover_models, load_bundle, read_model_card, version_key
from ml.models.folding import fold_batch_norms
from ml.segmenter import (
    SEGMENTATION_OUTPUTS,
    Outlining,
    SegmentationResult,
    Segmenter,
    load_segmenter,
    segmenter_from_bundle,
)

logger = logging.getLogger(__name__)

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")
# One pool for the whole process, one thread per core: image work (OpenCV, NumPy, zlib) releases
# the GIL, so the slices of a request use every core without oversubscribing them.
_WORKERS = max(1, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def parallel_map(function: Callable[[_Item], _Result], items: Iterable[_Item]) -> list[_Result]:
    """``function`` over ``items`` on the CPU's cores, results in order; in the caller's thread
    when there is one item or one core. Never call it from inside ``function``: the pool's
    threads would wait on each other."""
    work = list(items)
    if len(work) < 2 or _WORKERS < 2:
        return [function(item) for item in work]
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ich-image")
        pool = _pool
    return list(pool.map(function, work))


def run_all(jobs: Iterable[Callable[[], _Result]]) -> list[_Result]:
    """Run independent jobs on the CPU's cores (:func:`parallel_map`); their results in order."""
    return parallel_map(lambda job: job(), jobs)


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


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a greyscale, RGB or RGBA uint8 image."""
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        pixels = cv2.cvtColor(image, code)
    else:
        pixels = image
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("PNG encoding failed.")
    return buffer.tobytes()


# A PNG opens with its 8-byte signature and then its header chunk (IHDR: length, type, 13 bytes,
# CRC); text chunks may stand anywhere between the header and the image data.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADER_END = 8 + 4 + 4 + 13 + 4


def with_png_text(data: bytes, entries: dict[str, str]) -> bytes:
    """The PNG with one text chunk per entry inserted after its header chunk.

    Pillow's :class:`~PIL.PngImagePlugin.PngInfo` encodes each entry (``tEXt`` for Latin-1 text,
    ``iTXt`` for any other) and its ``putchunk`` writes the chunk with its CRC. The pixels stay as
    OpenCV compressed them: a Pillow save of a 512 x 512 RGB overlay takes about six times as long.
    """
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("Not a PNG image.")
    info = PngInfo()
    for keyword, text in entries.items():
        info.add_text(keyword, text)
    chunks = io.BytesIO()
    for kind, body, _after_image_data in info.chunks:
        putchunk(chunks, kind, body)
    return data[:_HEADER_END] + chunks.getvalue() + data[_HEADER_END:]


OVERLAY_WARNING = "Not for clinical use"


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """The image with ``text`` in white on a dark band along its bottom edge, burned into the
    pixels (so it stays with the image wherever it is copied); the text shrinks to fit."""
    captioned = np.ascontiguousarray(image.copy())
    height, width = captioned.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    margin = max(2, width // 100)
    scale = max(0.3, min(1.0, width / 900.0))
    (text_width, text_height), baseline = cv2.getTextSize(text, font, scale, 1)
    if text_width > width - 2 * margin:
        scale *= (width - 2 * margin) / text_width
        (text_width, text_height), baseline = cv2.getTextSize(text, font, scale, 1)
    band = min(height, text_height + baseline + 2 * margin)
    captioned[height - band :] = (captioned[height - band :] * 0.25).astype(np.uint8)
    white = (255, 255, 255) if captioned.ndim == 3 else 255
    cv2.putText(captioned, text, (margin, height - margin - baseline), font, scale, white, 1, cv2.LINE_AA)
    return captioned


def labelled_overlay_png(overlay: np.ndarray, model_name: str, model_version: str) -> bytes:
    """PNG of a Grad-CAM overlay that names its model and says it is not for clinical use, both
    in the pixels (a caption band) and as PNG text."""
    label = f"{model_name} {model_version} - {OVERLAY_WARNING}"
    return with_png_text(
        encode_png(caption(overlay, label)),
        {
            "Software": f"ICH Detect, model {model_name} {model_version}",
            "Description": "Grad-CAM heat map over the slice: where the classifier looked.",
            "Disclaimer": f"AI generated. {OVERLAY_WARNING}.",
        },
    )


def decode_upload(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode uploaded bytes, mapping decoder errors to the service's domain errors."""
    try:
        return decode_image(data, max_pixels=max_pixels)
    except UnsupportedImageError as exc:
        raise UnsupportedImage(f"{exc} Supported formats: PNG, JPEG, DICOM.") from exc
    except ImageDecodeError as exc:
        raise InvalidUpload(str(exc)) from exc


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

    def _preprocess(self, decoded: DecodedImage) -> tuple[np.ndarray, Any, np.ndarray | None]:
        result = preprocess(decoded.pixels, self.config)
        shared = self.config.head_threshold == ScopeThresholds.head_threshold
        return result.image, result.geometry, result.head_mask if shared else None

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
        timings["postprocess"] = (time.perf_counter() - started) * 1000.0
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
        preprocess_ms = (time.perf_counter() - started) * 1000.0
        batch = np.stack([image for image, _, _ in prepared])
        started = time.perf_counter()
        explained = self._predict(batch, outline=own_outlines)
        probabilities, heatmaps = explained.probabilities, explained.heatmaps
        model_ms = (time.perf_counter() - started) * 1000.0
        segmentations: list[SliceSegmentation | None] = [None] * len(images)
        segmentation_ms = 0.0
        if own_outlines and self.outlining is not None:
            # Only the post-processing is left: the heads ran in the model's pass.
            started = time.perf_counter()
            segmentations = list(
                outline_batch(
                    self.outlining,
                    explained.outputs["mask"],
                    explained.outputs["subtypes"],
                    [geometry for _, geometry, _ in prepared],
                    self.name,
                    self.version,
                )
            )
            segmentation_ms = (time.perf_counter() - started) * 1000.0
        elif segmenter is not None:
            started = time.perf_counter()
            if segmenter.config == self.config:
                segment_batch, geometries = batch, [geometry for _, geometry, _ in prepared]
            else:
                again = parallel_map(lambda decoded: preprocess(decoded.pixels, segmenter.config), images)
                segment_batch = np.stack([item.image for item in again])
                geometries = [item.geometry for item in again]
            segmentations = list(segmenter.segment(segment_batch, geometries))
            segmentation_ms = (time.perf_counter() - started) * 1000.0

        def finish(index: int) -> SliceResult:
            timings = {"preprocess": preprocess_ms / len(images), "model_and_gradcam": model_ms / len(images)}
            if own_outlines or segmenter is not None:
                timings["segmentation"] = segmentation_ms / len(images)
            result = self._postprocess(
                images[index], float(probabilities[index]), heatmaps[index], prepared[index][1], timings
            )
            result.segmentation = segmentations[index]
            result.head_mask = prepared[index][2]
            return result

        return parallel_map(finish, range(len(images)))


class ModelRegistry:
    """Every model bundle in the store, loaded once; the newest version of each name serves.

    Classifiers and segmentation models (cards with ``"kind": "segmentation"``) are kept apart:
    requests choose a classifier, and the newest version of ``segmentation_name`` (when one is
    loaded) outlines every slice. Segmentation bundles of other names are not loaded. Multitask
    bundles (``"kind": "multitask"``) are classifiers that outline their own slices: the
    segmentation model does not run for them.
    """

    def __init__(self, default_name: str, segmentation_name: str | None = None) -> None:
        self.default_name = default_name
        self.segmentation_name = segmentation_name or None
        self._models: dict[str, dict[str, SliceClassifier]] = {}
        self._segmenters: dict[str, dict[str, SliceSegmenter]] = {}

    @classmethod
    def from_store(
        cls, store: Path, default_name: str, segmentation_name: str | None = None
    ) -> ModelRegistry:
        """Every bundle in ``store`` that serves (:meth:`load`); one that cannot load is logged
        and left out, so the others still serve."""
        registry = cls(default_name, segmentation_name)
        for versions in discover_models(store).values():
            for model_dir in versions:
                try:
                    registry.load(model_dir)
                except Exception:
                    logger.exception("Could not load the model bundle in %s", model_dir)
        return registry

    def load(self, model_dir: Path) -> None:
        """Load the bundle in ``model_dir``, of any kind, as its card says: a classifier or a
        multitask model, or the configured segmentation model. The card is read and checked once;
        a bundle of an unknown kind, or a segmentation model not configured, is skipped.

        Raises:
            DataError: the card cannot be used (:func:`ml.model_io.read_model_card`).
            MissingDataFile: the bundle has no model file.
        """
        card = read_model_card(model_dir, servable=False)
        if card.kind not in KINDS:
            logger.warning("Skipped the bundle in %s: unknown kind %r.", model_dir, card.kind)
            return
        # Bundles are filed by name: <store>/<name>/<version>.
        if card.kind == SEGMENTATION_KIND and Path(model_dir).parent.name != self.segmentation_name:
            logger.info("Skipped the segmentation bundle in %s: not the one configured.", model_dir)
            return
        card.check_servable(Path(model_dir) / CARD_FILE)
        bundle = load_bundle(model_dir, card)
        if card.kind == SEGMENTATION_KIND:
            self.add_segmenter(SliceSegmenter.from_bundle(bundle))
        else:
            self.add(SliceClassifier(bundle))

    def add(self, classifier: SliceClassifier) -> None:
        self._models.setdefault(classifier.name, {})[classifier.version] = classifier

    def add_segmenter(self, segmenter: SliceSegmenter) -> None:
        self._segmenters.setdefault(segmenter.name, {})[segmenter.version] = segmenter

    @property
    def ready(self) -> bool:
        return self.default_name in self._models

    def use_operating_point(self, point: OperatingPointInUse) -> None:
        """Decide with a site's operating point on the serving classifier (the newest version of
        the default model); other versions keep their cards'."""
        self.get().operating_point = point

    def operating_point(self, name: str, version: str) -> OperatingPointInUse | None:
        """How a loaded classifier decides now; None when it is not loaded."""
        classifier = self._models.get(name, {}).get(version)
        return classifier.operating_point if classifier is not None else None

    def segmenter(self) -> SliceSegmenter | None:
        """The segmentation model that serves (newest version of the configured name), if loaded."""
        versions = self._segmenters.get(self.segmentation_name or "")
        if not versions:
            return None
        return versions[max(versions, key=version_key)]

    def outliner(self, classifier: SliceClassifier | None = None) -> SliceClassifier | SliceSegmenter | None:
        """The model that outlines what ``classifier`` (the default one unless named) analyses:
        the classifier itself when it is a multitask model, else the segmentation model, if loaded."""
        if classifier is None and self.ready:
            classifier = self.get()
        if classifier is not None and classifier.outlines_itself:
            return classifier
        return self.segmenter()

    def model_card(self, name: str, version: str) -> ModelCard:
        """The card of any loaded model: classifier, multitask or segmentation."""
        if name in self._segmenters:
            versions = self._segmenters[name]
            if version not in versions:
                raise NotFound(f"Model {name!r} has no version {version!r}; available: {sorted(versions)}.")
            return versions[version].model_card
        return self.get(name, version).model_card

    def find_card(self, name: str, version: str) -> ModelCard | None:
        """The card of a loaded model of any kind; None when no such model is loaded (a stored
        result outlives its model, and its page and report still render)."""
        try:
            return self.model_card(name, version)
        except (NotFound, ModelUnavailable):
            return None

    def outline_model_card(self, record: Any) -> ModelCard | None:
        """The card of the model named in a stored outline record (a segmentation or a multitask
        model), typed or as stored; None when it names none, or one no longer loaded."""
        named = getattr(record, "model", None)
        if isinstance(named, OutlineModel):
            return self.find_card(named.name, named.version)
        model = record.get("model") if isinstance(record, dict) else None
        if not isinstance(model, dict):
            return None
        return self.find_card(str(model.get("name")), str(model.get("version")))

    def card(self, name: str, version: str) -> dict[str, Any]:
        """The card of any loaded model as written (what the API answers)."""
        return self.model_card(name, version).raw

    def loaded_card(self, name: str, version: str) -> dict[str, Any]:
        """:meth:`find_card` as written; empty when no such model is loaded."""
        card = self.find_card(name, version)
        return card.raw if card is not None else {}

    def outline_card(self, record: Any) -> dict[str, Any]:
        """:meth:`outline_model_card` as written; empty when none."""
        card = self.outline_model_card(record)
        return card.raw if card is not None else {}

    def describe(self) -> list[dict[str, Any]]:
        classifiers = [
            {
                "name": name,
                "version": version,
                "kind": classifier.kind,
                "default": name == self.default_name and version == self._newest(name),
                "threshold": classifier.threshold,
                "study_threshold": classifier.operating_point.study.value,
                "operating_point": classifier.operating_point.slice.source,
                "study_operating_point": classifier.operating_point.study.source,
            }
            for name in sorted(self._models)
            for version, classifier in sorted(
                self._models[name].items(), key=lambda item: version_key(item[0])
            )
        ]
        serving = self.segmenter()
        segmenters = [
            {
                "name": name,
                "version": version,
                "kind": SEGMENTATION_KIND,
                "default": segmenter is serving,
                "threshold": segmenter.blood_threshold,
            }
            for name in sorted(self._segmenters)
            for version, segmenter in sorted(
                self._segmenters[name].items(), key=lambda item: version_key(item[0])
            )
        ]
        return classifiers + segmenters

    def _newest(self, name: str) -> str:
        return max(self._models[name], key=version_key)

    def get(self, name: str | None = None, version: str | None = None) -> SliceClassifier:
        """The named model (newest version unless one is named); the default model otherwise."""
        name = name or self.default_name
        if name not in self._models:
            if name == self.default_name:
                raise ModelUnavailable(
                    f"The model {name!r} is not loaded; the service is not ready. Check ICH_MODEL_STORE."
                )
            raise NotFound(f"No model named {name!r}; available: {sorted(self._models)}.")
        versions = self._models[name]
        chosen = version or self._newest(name)
        if chosen not in versions:
            raise NotFound(f"Model {name!r} has no version {chosen!r}; available: {sorted(versions)}.")
        return versions[chosen]
