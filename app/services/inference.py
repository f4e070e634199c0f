"""Model registry and slice inference: decode -> preprocess -> predict with Grad-CAM -> images."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.core.errors import InvalidUpload, ModelUnavailable, NotFound, UnsupportedImage
from ml.data.imaging import DecodedImage, ImageDecodeError, UnsupportedImageError, decode_image
from ml.data.preprocessing import preprocess
from ml.explain.gradcam import GradCam, overlay_heatmap
from ml.model_io import ModelBundle, discover_models, load_bundle, version_key

logger = logging.getLogger(__name__)

POSITIVE_LABEL = "hemorrhage"
NEGATIVE_LABEL = "no_hemorrhage"
# Stored instead of either when the image is not a head CT slice (ml.data.scope).
OUT_OF_SCOPE_LABEL = "out_of_scope"


@dataclass
class SliceResult:
    """Everything one slice's analysis produced."""

    probability: float
    label: str
    threshold: float
    model_name: str
    model_version: str
    decoded: DecodedImage
    heatmap: np.ndarray
    overlay: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.decoded.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.decoded.pixels.shape[0])


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a greyscale or RGB uint8 image."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("PNG encoding failed.")
    return buffer.tobytes()


def decode_upload(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode uploaded bytes, mapping decoder errors to the service's domain errors."""
    try:
        return decode_image(data, max_pixels=max_pixels)
    except UnsupportedImageError as exc:
        raise UnsupportedImage(f"{exc} Supported formats: PNG, JPEG, DICOM.") from exc
    except ImageDecodeError as exc:
        raise InvalidUpload(str(exc)) from exc


class SliceClassifier:
    """One loaded model bundle, ready to classify and explain slices.

    The shape follows ``_preprocess -> _predict -> _postprocess`` with one public
    :meth:`predict`; the forward pass and Grad-CAM run as a single compiled call.
    """

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.config = bundle.preprocess_config
        self.gradcam = GradCam(bundle.model, bundle.gradcam_layer)
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
        return self.bundle.threshold

    def warm_up(self) -> None:
        """Trace the compiled function once so the first request is not slow."""
        size = self.config.image_size
        self.gradcam(np.zeros((1, size, size, 1), np.float32), self.threshold)

    def _preprocess(self, decoded: DecodedImage) -> tuple[np.ndarray, Any]:
        result = preprocess(decoded.pixels, self.config)
        return result.image, result.geometry

    def _predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self.gradcam(batch, self.threshold)

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
        label = POSITIVE_LABEL if probability >= self.threshold else NEGATIVE_LABEL
        return SliceResult(
            probability=float(probability),
            label=label,
            threshold=self.threshold,
            model_name=self.name,
            model_version=self.version,
            decoded=decoded,
            heatmap=original_heatmap,
            overlay=overlay,
            timings_ms=timings,
        )

    def predict(self, decoded: DecodedImage) -> SliceResult:
        """Classify and explain one decoded slice."""
        return self.predict_many([decoded])[0]

    def predict_many(self, images: list[DecodedImage]) -> list[SliceResult]:
        """Classify and explain several slices in one batched pass."""
        if not images:
            return []
        started = time.perf_counter()
        prepared = [self._preprocess(decoded) for decoded in images]
        preprocess_ms = (time.perf_counter() - started) * 1000.0
        started = time.perf_counter()
        probabilities, heatmaps = self._predict(np.stack([image for image, _ in prepared]))
        model_ms = (time.perf_counter() - started) * 1000.0
        results = []
        for index, decoded in enumerate(images):
            timings = {"preprocess": preprocess_ms / len(images), "model_and_gradcam": model_ms / len(images)}
            results.append(
                self._postprocess(
                    decoded, float(probabilities[index]), heatmaps[index], prepared[index][1], timings
                )
            )
        return results


class ModelRegistry:
    """Every model bundle in the store, loaded once; the newest version of each name serves."""

    def __init__(self, default_name: str) -> None:
        self.default_name = default_name
        self._models: dict[str, dict[str, SliceClassifier]] = {}

    @classmethod
    def from_store(cls, store: Path, default_name: str) -> ModelRegistry:
        registry = cls(default_name)
        for versions in discover_models(store).values():
            for model_dir in versions:
                try:
                    registry.add(SliceClassifier(load_bundle(model_dir)))
                except Exception:
                    logger.exception("Could not load the model bundle in %s", model_dir)
        return registry

    def add(self, classifier: SliceClassifier) -> None:
        self._models.setdefault(classifier.name, {})[classifier.version] = classifier

    @property
    def ready(self) -> bool:
        return self.default_name in self._models

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "version": version,
                "default": name == self.default_name and version == self._newest(name),
                "threshold": classifier.threshold,
            }
            for name in sorted(self._models)
            for version, classifier in sorted(
                self._models[name].items(), key=lambda item: version_key(item[0])
            )
        ]

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
