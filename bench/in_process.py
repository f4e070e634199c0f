"""In-process timings against the model the service serves: optimised, naive and floor.

* optimised: :meth:`app.services.inference.SliceClassifier.predict_many`, one batched, compiled
  forward-and-gradient pass for every slice, then the overlays and the PNGs the service stores;
* naive: what a first version would do, per slice: ``model.predict`` on a batch of one, then
  Grad-CAM through a freshly built ``keras.Model`` and an eager ``tf.GradientTape``;
* floor: the bare model called (compiled, ``training=False``) on a ready tensor, the least any
  path could cost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.config import BenchConfig
from bench.inputs import build_dicom_series, pick_slice_png, png_size
from bench.stats import elapsed_ms, repeat, summarize
from ml.data.imaging import DEFAULT_MAX_PIXELS
from ml.errors import MissingDataFile

logger = logging.getLogger("bench")

__all__ = [
    "NaiveSlice",
    "compiled_forward",
    "encode_result",
    "load_classifier",
    "measure_segmentation_floor",
    "measure_series",
    "measure_single_slice",
    "naive_analyse",
    "newest_bundle",
    "run_in_process",
]


def newest_bundle(model_store: Path, model_name: str) -> Path:
    """The folder of the newest version of ``model_name`` in the store."""
    from ml.model_io import discover_models

    versions = discover_models(model_store).get(model_name)
    if not versions:
        raise MissingDataFile(
            f"No model bundle named {model_name!r} (model.keras + model_card.json) in {model_store}; "
            "train one or pass --model-store."
        )
    return versions[-1]


def load_classifier(model_store: Path, model_name: str) -> Any:
    """The newest version of ``model_name`` in the store, loaded as the service loads it."""
    from app.services.inference import SliceClassifier
    from ml.model_io import load_bundle

    return SliceClassifier(load_bundle(newest_bundle(model_store, model_name)))


def encode_result(result: Any) -> dict[str, bytes]:
    """The three PNGs :meth:`app.services.predictions.PredictionService.create` stores per slice."""
    from app.services.imaging import encode_png

    heat8 = (result.heatmap * 255.0).round().astype("uint8")
    return {
        "original.png": encode_png(result.decoded.pixels),
        "overlay.png": encode_png(result.overlay),
        "heatmap.png": encode_png(heat8),
    }


def compiled_forward(model: Any, image_size: int) -> Callable[[Any], Any]:
    """The bare model as one compiled function with a fixed input signature (the compute floor)."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, image_size, image_size, 1], tf.float32)

    @tf.function(input_signature=[spec])
    def forward(images: tf.Tensor) -> tf.Tensor:
        return model(images, training=False)

    return forward


@dataclass
class NaiveSlice:
    """One slice through the naive path."""

    probability: float
    heatmap: np.ndarray
    files: dict[str, bytes]


def naive_analyse(classifier: Any, decoded: Any) -> NaiveSlice:
    """One slice as a first version would analyse it, with the same outputs as the service.

    ``model.predict`` on a batch of one, then Grad-CAM after keras-io's ``make_gradcam_heatmap``:
    a new ``keras.Model`` to the convolutional layer and the logit, an eager ``tf.GradientTape``,
    then the same overlay and PNGs as the service.
    """
    import keras
    import tensorflow as tf

    from app.services.imaging import encode_png
    from ml.data.preprocessing import preprocess
    from ml.explain.gradcam import overlay_heatmap
    from ml.model_io import predict_probabilities

    model = classifier.bundle.model
    size = classifier.config.image_size
    prepared = preprocess(decoded.pixels, classifier.config)
    batch = prepared.image[np.newaxis]
    probability = float(predict_probabilities(model, batch)[0])
    gradient_model = keras.Model(
        model.input,
        [model.get_layer(classifier.bundle.gradcam_layer).output, model.get_layer("logit").output],
    )
    with tf.GradientTape() as tape:
        features, logit = gradient_model(batch)
        # Explain the predicted class: the normal class's score is the negated logit.
        score = logit[:, 0] if probability >= classifier.threshold else -logit[:, 0]
    gradients = tape.gradient(score, features)
    weights = tf.reduce_mean(gradients, axis=(0, 1, 2))
    cam = tf.nn.relu(tf.squeeze(features[0] @ weights[..., tf.newaxis], axis=-1)).numpy()
    peak = float(cam.max())
    layer_heatmap = (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)
    input_heatmap = cv2.resize(layer_heatmap, (size, size), interpolation=cv2.INTER_LINEAR)
    heatmap = np.clip(prepared.geometry.to_original(input_heatmap), 0.0, 1.0)
    overlay = overlay_heatmap(decoded.pixels, heatmap)
    files = {
        "original.png": encode_png(decoded.pixels),
        "overlay.png": encode_png(overlay),
        "heatmap.png": encode_png((heatmap * 255.0).round().astype("uint8")),
    }
    return NaiveSlice(probability=probability, heatmap=heatmap, files=files)


def measure_single_slice(classifier: Any, png: bytes, config: BenchConfig) -> dict[str, Any]:
    """One PNG slice in-process: the service's stages, the bare model and the Grad-CAM pass alone."""
    import tensorflow as tf

    from app.services.imaging import decode_upload
    from ml.data.preprocessing import preprocess

    size = classifier.config.image_size
    stages: dict[str, list[float]] = {}
    end_to_end: list[float] = []
    for index in range(config.warmup + config.single_repeats):
        started = time.perf_counter()
        decode_started = time.perf_counter()
        decoded = decode_upload(png, DEFAULT_MAX_PIXELS)
        decode_ms = elapsed_ms(decode_started)
        result = classifier.predict(decoded)
        encode_started = time.perf_counter()
        encode_result(result)
        encode_ms = elapsed_ms(encode_started)
        total_ms = elapsed_ms(started)
        if index < config.warmup:
            continue
        end_to_end.append(total_ms)
        for name, value in {"decode": decode_ms, **result.timings_ms, "encode": encode_ms}.items():
            stages.setdefault(name, []).append(value)

    prepared = preprocess(decode_upload(png, DEFAULT_MAX_PIXELS).pixels, classifier.config).image[np.newaxis]
    tensor = tf.constant(prepared, tf.float32)
    forward = compiled_forward(classifier.model, size)
    # A multitask network answers with every head at once: the floor is that whole pass.
    floor = repeat(
        lambda: tf.nest.map_structure(lambda output: output.numpy(), forward(tensor)),
        config.warmup + 1,
        config.single_repeats,
    )
    gradcam_pass = repeat(
        lambda: classifier.gradcam(tensor, classifier.threshold), config.warmup + 1, config.single_repeats
    )
    floor_stats = summarize(floor)
    gradcam_stats = summarize(gradcam_pass)
    return {
        "end_to_end_ms": summarize(end_to_end),
        "stages_ms": {name: summarize(values) for name, values in stages.items()},
        "floor_ms": floor_stats,
        "forward_and_gradcam_ms": gradcam_stats,
        "gradcam_extra_ms": round(gradcam_stats["median"] - floor_stats["median"], 3),
    }


def measure_segmentation_floor(
    model_store: Path, served: str, png: bytes, config: BenchConfig
) -> dict[str, Any]:
    """The bare segmentation model (``served``: ``name/version`` as ``/readyz`` names it) on one slice.

    The bundle is loaded from ``model_store/name/version`` with :func:`ml.segmenter.load_segmenter`
    and called compiled, ``training=False``, on the ready 1 x S x S x 1 tensor of the same slice.
    """
    import tensorflow as tf

    from app.services.imaging import decode_upload
    from ml.data.preprocessing import preprocess
    from ml.segmenter import load_segmenter

    name, _, version = served.partition("/")
    model_dir = Path(model_store) / name / version
    if not name or not version or not model_dir.is_dir():
        raise MissingDataFile(f"The server serves segmentation model {served!r}, not found as {model_dir}.")
    segmenter = load_segmenter(model_dir, fold=True)
    size = segmenter.config.image_size
    prepared = preprocess(decode_upload(png, DEFAULT_MAX_PIXELS).pixels, segmenter.config).image[np.newaxis]
    tensor = tf.constant(prepared, tf.float32)
    forward = compiled_forward(segmenter.model, size)

    def call() -> Any:
        return tf.nest.map_structure(lambda output: output.numpy(), forward(tensor))

    floor = repeat(call, config.warmup + 1, config.single_repeats)
    return {
        "model": served,
        "input_shape": [int(value) for value in prepared.shape],
        "parameters": int(segmenter.model.count_params()),
        "floor_ms": summarize(floor),
    }


def measure_series(classifier: Any, series: list[bytes], config: BenchConfig) -> dict[str, Any]:
    """The series end to end (decode, analyse, overlays, PNGs): optimised, naive, and the floor."""
    import tensorflow as tf

    from app.services.imaging import decode_upload
    from ml.data.preprocessing import preprocess

    def decode_all() -> list[Any]:
        return [decode_upload(data, DEFAULT_MAX_PIXELS) for data in series]

    def optimised() -> list[Any]:
        results = classifier.predict_many(decode_all())
        for result in results:
            encode_result(result)
        return list(results)

    def naive() -> list[NaiveSlice]:
        return [naive_analyse(classifier, decoded) for decoded in decode_all()]

    decoded = decode_all()
    batch = tf.constant(
        np.stack([preprocess(item.pixels, classifier.config).image for item in decoded]), tf.float32
    )
    forward = compiled_forward(classifier.model, classifier.config.image_size)

    decode_ms = repeat(decode_all, 1, config.series_repeats)
    optimised_ms = repeat(optimised, config.warmup, config.series_repeats)
    floor_ms = repeat(
        lambda: tf.nest.map_structure(lambda output: output.numpy(), forward(batch)),
        config.warmup + 1,
        config.series_repeats,
    )
    # The naive path builds new graphs on every call; one untimed slice warms Keras' predict.
    naive_analyse(classifier, decoded[0])
    naive_ms = repeat(naive, 0, config.naive_repeats)

    optimised_results = optimised()
    naive_results = naive()
    probability_difference = max(
        abs(fast.probability - slow.probability)
        for fast, slow in zip(optimised_results, naive_results, strict=True)
    )
    heatmap_difference = max(
        float(np.abs(fast.heatmap - slow.heatmap).max())
        for fast, slow in zip(optimised_results, naive_results, strict=True)
    )
    optimised_stats = summarize(optimised_ms)
    naive_stats = summarize(naive_ms)
    return {
        "num_slices": len(series),
        "source": "rsna_dicom slices re-used as one series (distinct SOPInstanceUIDs)",
        "image_shape": [int(value) for value in decoded[0].pixels.shape],
        "decode_ms": summarize(decode_ms),
        "optimised_ms": optimised_stats,
        "naive_ms": naive_stats,
        "floor_batch_ms": summarize(floor_ms),
        "optimised_slices_per_second": round(len(series) / (optimised_stats["median"] / 1000.0), 2),
        "naive_slices_per_second": round(len(series) / (naive_stats["median"] / 1000.0), 2),
        "agreement": {
            "max_probability_difference": float(f"{probability_difference:.3g}"),
            "max_heatmap_difference": float(f"{heatmap_difference:.3g}"),
        },
    }


def run_in_process(config: BenchConfig) -> dict[str, Any]:
    """The single slice and the series in this process, against the same model the service serves."""
    classifier = load_classifier(config.model_store, config.model_name)
    png_path = pick_slice_png(config.data_dir)
    logger.info("In-process: single slice %s", png_path.name)
    single = measure_single_slice(classifier, png_path.read_bytes(), config)
    logger.info("In-process: %d-slice DICOM series", config.series_slices)
    series = measure_series(classifier, build_dicom_series(config.data_dir, config.series_slices), config)
    model = classifier.bundle.model
    return {
        "model": {
            "name": classifier.name,
            "version": classifier.version,
            "image_size": classifier.config.image_size,
            "parameters": int(model.count_params()),
            "gradcam_layer": classifier.bundle.gradcam_layer,
        },
        "image": {"path": str(png_path.relative_to(config.data_dir)), "size": png_size(png_path)},
        "single_slice": single,
        "series": series,
    }
