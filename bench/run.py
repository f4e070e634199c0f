"""The benchmark's library code: in-process timings of the serving path, and the real server over HTTP.

Every figure is a median and a 95th percentile over repeated runs after a warm-up, on the machine
the benchmark runs on. Three ways of analysing the same CT series are compared in one run:

* optimised: :meth:`app.services.inference.SliceClassifier.predict_many`, one batched, compiled
  forward-and-gradient pass for every slice, then the overlays and the PNGs the service stores;
* naive: what a first version would do, per slice: ``model.predict`` on a batch of one, then
  Grad-CAM through a freshly built ``keras.Model`` and an eager ``tf.GradientTape``;
* floor: the bare model called (compiled, ``training=False``) on a ready tensor, the least any
  path could cost.

The HTTP figures come from the real service (``python -m app`` under uvicorn) on a loopback port.
One slice is sent twice over: with ``segment=false`` as a form field (classification and Grad-CAM
only, the path the issue's single-slice targets are defined for) and, when ``/readyz`` names a
segmentation model, as a default request that is also segmented; that model's bare forward pass
is then measured in-process as a second floor. Everything else over HTTP (PDF reports,
throughput, memory, start-up, the study endpoint) uses the server's default configuration.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import platform
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.service import ServiceProcess
from ml.data.imaging import DEFAULT_MAX_PIXELS
from ml.errors import MissingDataFile

logger = logging.getLogger("bench")

__all__ = [
    "BenchConfig",
    "HttpBench",
    "build_dicom_series",
    "evaluate_targets",
    "format_table",
    "machine_info",
    "measure_segmentation_floor",
    "run",
    "run_http",
    "run_in_process",
    "summarize",
]

STUDIES_PATH = "/api/v1/studies"
PREDICTIONS_PATH = "/api/v1/predictions"
SERIES_SPACING_MM = 5.0


def default_data_dir() -> Path:
    """``ICH_DATA_DIR`` when set, else ``../shared/datasets`` beside the repository."""
    return Path(os.environ.get("ICH_DATA_DIR", "../shared/datasets"))


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how often.

    Attributes:
        model_store: folder of model bundles; the newest version of ``model_name`` is measured.
        data_dir: root of the real datasets (``head_ct``, ``rsna_dicom``).
        output: where the JSON results go.
        model_name: the model to measure (the service's default model).
        requests: sequential single-slice requests through the API, for each of the two paths.
        warmup: untimed runs before every timed measurement.
        single_repeats: in-process single-slice analyses.
        series_slices: slices in the DICOM series.
        series_repeats: timed optimised (and floor) passes over the series.
        naive_repeats: timed naive passes over the series (slow, so fewer).
        pdf_reports: distinct predictions whose PDF report is generated on first request.
        concurrency: numbers of concurrent clients for the throughput runs.
        requests_per_client: requests each concurrent client sends.
        memory_requests: requests the server has answered when its memory is read the second time.
        start_runs: server starts timed from process launch to a ready /readyz.
        study_repeats: timed uploads of the series to the study endpoint, where it exists.
        skip_http: measure in-process only.
        quick: small counts for a smoke run; the figures are not meaningful.
    """

    model_store: Path = Path("model_store")
    data_dir: Path = field(default_factory=default_data_dir)
    output: Path = Path("artifacts/bench/results.json")
    model_name: str = "ich-compact"
    requests: int = 100
    warmup: int = 5
    single_repeats: int = 50
    series_slices: int = 40
    series_repeats: int = 7
    naive_repeats: int = 3
    pdf_reports: int = 10
    concurrency: tuple[int, ...] = (1, 4, 8)
    requests_per_client: int = 16
    memory_requests: int = 500
    start_runs: int = 3
    study_repeats: int = 3
    skip_http: bool = False
    quick: bool = False

    def __post_init__(self) -> None:
        for name in ("requests", "single_repeats", "series_slices", "series_repeats", "naive_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.warmup < 0 or self.pdf_reports < 0 or self.requests_per_client < 1 or self.start_runs < 1:
            raise ValueError(
                "warmup and pdf_reports must be >= 0, requests_per_client and start_runs >= 1; got "
                f"{self.warmup}, {self.pdf_reports}, {self.requests_per_client}, {self.start_runs}."
            )
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency needs positive client counts, got {self.concurrency}.")

    def as_quick(self) -> BenchConfig:
        """The same settings with the small counts of a smoke run (memory read after ``requests``)."""
        return replace(
            self,
            warmup=min(self.warmup, 2),
            single_repeats=3,
            series_slices=min(self.series_slices, 8),
            series_repeats=2,
            naive_repeats=1,
            pdf_reports=min(self.pdf_reports, 2),
            requests_per_client=2,
            memory_requests=self.requests,
            start_runs=1,
            study_repeats=1,
            quick=True,
        )

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}


# --------------------------------------------------------------------------------------------
# Statistics and machine


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, 95th percentile, mean, min, max and count of a list of timings."""
    if not values:
        raise ValueError("Cannot summarise an empty list of timings.")
    array = np.asarray(values, dtype=np.float64)
    return {
        "median": round(float(np.median(array)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "mean": round(float(array.mean()), 3),
        "min": round(float(array.min()), 3),
        "max": round(float(array.max()), 3),
        "n": int(array.size),
    }


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _read_key_values(path: Path, separator: str) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return values
    for line in lines:
        key, found, value = line.partition(separator)
        if found and key.strip() not in values:
            values[key.strip()] = value.strip()
    return values


def machine_info() -> dict[str, Any]:
    """The machine the figures belong to: cores, CPU, memory, library versions and load."""
    import keras
    import tensorflow as tf

    cpu = _read_key_values(Path("/proc/cpuinfo"), ":")
    memory = _read_key_values(Path("/proc/meminfo"), ":")
    total_kib = memory.get("MemTotal", "0 kB").split()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        "memory_total_mib": round(int(total_kib) / 1024.0, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def malloc_environment(pid: int) -> dict[str, str]:
    """The glibc malloc settings (``MALLOC_*`` variables) a process was started with."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    settings = {}
    for entry in raw.split(b"\0"):
        key, found, value = entry.decode(errors="replace").partition("=")
        if found and key.startswith("MALLOC_"):
            settings[key] = value
    return settings


def rss_mib(pid: int) -> dict[str, float]:
    """Resident memory (``VmRSS``) and its peak (``VmHWM``) of a process, in MiB."""
    status = _read_key_values(Path(f"/proc/{pid}/status"), ":")

    def mebibytes(key: str) -> float:
        return round(int(status.get(key, "0 kB").split()[0]) / 1024.0, 1)

    return {"rss_mib": mebibytes("VmRSS"), "peak_rss_mib": mebibytes("VmHWM")}


# --------------------------------------------------------------------------------------------
# Inputs


def pick_slice_png(data_dir: Path) -> Path:
    """The head_ct PNG of median pixel count: a typical slice, neither the smallest nor the largest."""
    paths = sorted((data_dir / "head_ct" / "images").glob("*.png"))
    if not paths:
        raise MissingDataFile(
            f"No head_ct PNGs under {data_dir / 'head_ct' / 'images'}; pass --data-dir or set ICH_DATA_DIR."
        )
    sizes = []
    for path in paths:
        header = path.read_bytes()[:24]
        # The PNG header stores width and height as big-endian integers at bytes 16..24.
        sizes.append(int.from_bytes(header[16:20], "big") * int.from_bytes(header[20:24], "big"))
    order = np.argsort(sizes, kind="stable")
    return paths[int(order[len(order) // 2])]


def build_dicom_series(data_dir: Path, num_slices: int) -> list[bytes]:
    """``num_slices`` DICOM files that read as one axial series, from the RSNA slices re-used in turn.

    Each copy gets its own SOPInstanceUID and InstanceNumber, one shared study and series UID, and
    an ImagePositionPatient ``SERIES_SPACING_MM`` further along the slice normal than the last.
    """
    import pydicom
    import pydicom.config
    from pydicom.uid import generate_uid

    sources = sorted((data_dir / "rsna_dicom" / "dicom").glob("*.dcm"))
    if not sources:
        raise MissingDataFile(
            f"No DICOM files under {data_dir / 'rsna_dicom' / 'dicom'}; pass --data-dir or set ICH_DATA_DIR."
        )
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    settings = pydicom.config.settings
    previous_mode = settings.reading_validation_mode
    # The RSNA files carry non-conforming UIDs ("ID_..."); every one of them is replaced below.
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        templates = [pydicom.dcmread(path) for path in sources]
        for index in range(num_slices):
            dataset = copy.deepcopy(templates[index % len(templates)])
            instance_uid = generate_uid()
            dataset.SOPInstanceUID = instance_uid
            dataset.file_meta.MediaStorageSOPInstanceUID = instance_uid
            dataset.StudyInstanceUID = study_uid
            dataset.SeriesInstanceUID = series_uid
            dataset.InstanceNumber = index + 1
            dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            dataset.ImagePositionPatient = [-125.0, -125.0, SERIES_SPACING_MM * index]
            dataset.SliceThickness = SERIES_SPACING_MM
            dataset.PatientName = "Bench^Series"
            dataset.PatientID = "BENCH-0001"
            buffer = io.BytesIO()
            dataset.save_as(buffer)
            files.append(buffer.getvalue())
    finally:
        settings.reading_validation_mode = previous_mode
    return files


# --------------------------------------------------------------------------------------------
# In-process: optimised, naive and floor


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
    from app.services.inference import encode_png

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

    from app.services.inference import encode_png
    from ml.data.preprocessing import preprocess
    from ml.explain.gradcam import overlay_heatmap

    model = classifier.bundle.model
    size = classifier.config.image_size
    prepared = preprocess(decoded.pixels, classifier.config)
    batch = prepared.image[np.newaxis]
    probability = float(np.ravel(model.predict(batch, verbose=0))[0])
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


def _repeat(function: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        function()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(_elapsed_ms(started))
    return timings


def measure_single_slice(classifier: Any, png: bytes, config: BenchConfig) -> dict[str, Any]:
    """One PNG slice in-process: the service's stages, the bare model and the Grad-CAM pass alone."""
    import tensorflow as tf

    from app.services.inference import decode_upload
    from ml.data.preprocessing import preprocess

    size = classifier.config.image_size
    stages: dict[str, list[float]] = {}
    end_to_end: list[float] = []
    for index in range(config.warmup + config.single_repeats):
        started = time.perf_counter()
        decode_started = time.perf_counter()
        decoded = decode_upload(png, DEFAULT_MAX_PIXELS)
        decode_ms = _elapsed_ms(decode_started)
        result = classifier.predict(decoded)
        encode_started = time.perf_counter()
        encode_result(result)
        encode_ms = _elapsed_ms(encode_started)
        total_ms = _elapsed_ms(started)
        if index < config.warmup:
            continue
        end_to_end.append(total_ms)
        for name, value in {"decode": decode_ms, **result.timings_ms, "encode": encode_ms}.items():
            stages.setdefault(name, []).append(value)

    prepared = preprocess(decode_upload(png, DEFAULT_MAX_PIXELS).pixels, classifier.config).image[np.newaxis]
    tensor = tf.constant(prepared, tf.float32)
    forward = compiled_forward(classifier.model, size)
    floor = _repeat(lambda: forward(tensor).numpy(), config.warmup + 1, config.single_repeats)
    gradcam_pass = _repeat(
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

    from app.services.inference import decode_upload
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

    floor = _repeat(call, config.warmup + 1, config.single_repeats)
    return {
        "model": served,
        "input_shape": [int(value) for value in prepared.shape],
        "parameters": int(segmenter.model.count_params()),
        "floor_ms": summarize(floor),
    }


def measure_series(classifier: Any, series: list[bytes], config: BenchConfig) -> dict[str, Any]:
    """The series end to end (decode, analyse, overlays, PNGs): optimised, naive, and the floor."""
    import tensorflow as tf

    from app.services.inference import decode_upload
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

    decode_ms = _repeat(decode_all, 1, config.series_repeats)
    optimised_ms = _repeat(optimised, config.warmup, config.series_repeats)
    floor_ms = _repeat(lambda: forward(batch).numpy(), config.warmup + 1, config.series_repeats)
    # The naive path builds new graphs on every call; one untimed slice warms Keras' predict.
    naive_analyse(classifier, decoded[0])
    naive_ms = _repeat(naive, 0, config.naive_repeats)

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
        "image": {"path": str(png_path.relative_to(config.data_dir)), "size": _png_size(png_path)},
        "single_slice": single,
        "series": series,
    }


def _png_size(path: Path) -> list[int]:
    header = path.read_bytes()[:24]
    return [int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")]


# --------------------------------------------------------------------------------------------
# Over HTTP: the real server


class HttpBench:
    """The real service (``python -m app``) on a loopback port, and timed requests to it.

    Args:
        model_store: the model bundles the service loads.
        work_dir: a throw-away folder for the service's database and files.
        api_key: the key the service accepts and the clients send.
    """

    def __init__(self, model_store: Path, work_dir: Path, api_key: str) -> None:
        self.work_dir = work_dir
        self.api_key = api_key
        self.env = {
            "ICH_DATA_DIR": str(work_dir / "data"),
            "ICH_DATABASE_URL": f"sqlite:///{work_dir / 'data' / 'ich.sqlite3'}",
            "ICH_MODEL_STORE": str(Path(model_store).resolve()),
            "ICH_API_KEYS": api_key,
            # The benchmark is the only client and sends far more than a clinician would.
            "ICH_RATE_LIMIT_PER_MINUTE": "0",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        self.server: ServiceProcess | None = None
        self.posted = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("The service is not running; call start() first.")
        return str(self.server.url)

    @property
    def pid(self) -> int:
        if self.server is None or self.server.process is None:
            raise RuntimeError("The service is not running; call start() first.")
        return int(self.server.process.pid)

    def start(self) -> float:
        """Launch the service; seconds from launching the process to /readyz answering 200."""
        self.server = ServiceProcess(self.env, startup_timeout=180.0)
        started = time.perf_counter()
        self.server.start()
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> Any:
        import httpx

        return httpx.Client(base_url=self.url, headers=self.headers, timeout=300.0)

    def post_slice(
        self, client: Any, png: bytes, segment: bool | None = None
    ) -> tuple[float, dict[str, Any]]:
        """POST one slice; the client's milliseconds and the response body.

        ``segment`` is sent as the ``segment`` form field; ``None`` sends none (the default request).
        """
        data = None if segment is None else {"segment": "true" if segment else "false"}
        started = time.perf_counter()
        response = client.post(PREDICTIONS_PATH, files={"file": ("slice.png", png, "image/png")}, data=data)
        elapsed = _elapsed_ms(started)
        self.posted += 1
        if response.status_code != 201:
            raise RuntimeError(f"POST {PREDICTIONS_PATH} answered {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        return elapsed, body

    def study_endpoint_available(self, client: Any) -> bool:
        """Whether the OpenAPI document lists ``POST /api/v1/studies``."""
        paths = client.get("/openapi.json").json().get("paths", {})
        return "post" in paths.get(STUDIES_PATH, {})

    def post_study(self, client: Any, series: list[bytes]) -> tuple[float, int]:
        """POST a whole series as multipart ``files``; the client's milliseconds and the status code."""
        files = [
            ("files", (f"slice-{index:03d}.dcm", data, "application/dicom"))
            for index, data in enumerate(series)
        ]
        started = time.perf_counter()
        response = client.post(STUDIES_PATH, files=files)
        return _elapsed_ms(started), int(response.status_code)


def measure_http_single(
    bench: HttpBench, png: bytes, config: BenchConfig, segment: bool | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Sequential single-slice requests: client latency and the server's own stage timings.

    ``segment=False`` sends the form field that skips segmentation; ``None`` sends the default
    request. A request that skips segmentation and still comes back segmented is an error.
    """
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    overhead: list[float] = []
    ids: list[str] = []
    segmented = 0
    with bench.client() as client:
        for _ in range(config.warmup):
            bench.post_slice(client, png, segment)
        for _ in range(config.requests):
            elapsed, body = bench.post_slice(client, png, segment)
            latencies.append(elapsed)
            ids.append(str(body["id"]))
            segmented += body.get("segmentation") is not None
            timings = body.get("timings_ms", {})
            for name, value in timings.items():
                stages.setdefault(name, []).append(float(value))
            if "total" in timings:
                overhead.append(elapsed - float(timings["total"]))
    if segment is False and (segmented or "segmentation" in stages):
        raise RuntimeError(f"POST {PREDICTIONS_PATH} with segment=false still segmented the slice.")
    result: dict[str, Any] = {
        "request": "default" if segment is None else f"segment={str(segment).lower()} (form field)",
        "segmented_responses": segmented,
        "end_to_end_ms": summarize(latencies),
        "server_stages_ms": {name: summarize(values) for name, values in stages.items()},
    }
    if overhead:
        result["outside_stages_ms"] = summarize(overhead)
    return result, ids


def measure_pdf(bench: HttpBench, prediction_ids: list[str]) -> dict[str, Any] | None:
    """First GET of report.pdf for distinct predictions: the lazily generated report."""
    if not prediction_ids:
        return None
    timings = []
    with bench.client() as client:
        for prediction_id in prediction_ids:
            started = time.perf_counter()
            response = client.get(f"{PREDICTIONS_PATH}/{prediction_id}/report.pdf")
            timings.append(_elapsed_ms(started))
            if response.status_code != 200 or not response.content.startswith(b"%PDF"):
                raise RuntimeError(f"report.pdf of {prediction_id} answered {response.status_code}.")
    return summarize(timings)


def measure_throughput(
    bench: HttpBench, png: bytes, clients: int, requests_per_client: int
) -> dict[str, Any]:
    """``clients`` threads, each with its own connection, send a fixed number of slices at once."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        try:
            with bench.client() as client:
                barrier.wait()
                for _ in range(requests_per_client):
                    latencies[index].append(bench.post_slice(client, png)[0])
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"A throughput client failed: {errors[0]!r}") from errors[0]
    total = clients * requests_per_client
    return {
        "clients": clients,
        "requests": total,
        "seconds": round(elapsed, 3),
        "requests_per_second": round(total / elapsed, 2),
        "latency_ms": summarize([value for values in latencies for value in values]),
    }


def measure_study_http(bench: HttpBench, series: list[bytes], config: BenchConfig) -> dict[str, Any]:
    """The series through ``POST /api/v1/studies`` when the service has it; otherwise why not."""
    with bench.client() as client:
        if not bench.study_endpoint_available(client):
            return {"available": False, "reason": f"POST {STUDIES_PATH} is not in /openapi.json"}
        _, status = bench.post_study(client, series)
        if status >= 400:
            return {"available": False, "reason": f"POST {STUDIES_PATH} answered {status}"}
        timings = []
        for _ in range(config.study_repeats):
            elapsed, status = bench.post_study(client, series)
            if status >= 400:
                raise RuntimeError(f"POST {STUDIES_PATH} answered {status}.")
            timings.append(elapsed)
    stats = summarize(timings)
    return {
        "available": True,
        "status_code": status,
        "num_slices": len(series),
        "end_to_end_ms": stats,
        "slices_per_second": round(len(series) / (stats["median"] / 1000.0), 2),
    }


def new_api_key() -> str:
    """A fresh key in the service's format, accepted through ``ICH_API_KEYS``."""
    return "ich_" + secrets.token_urlsafe(32)


def run_http(config: BenchConfig) -> dict[str, Any]:
    """Start-up, single slices, PDF reports, concurrency, the study endpoint and memory, over HTTP."""
    png = pick_slice_png(config.data_dir).read_bytes()
    series = build_dicom_series(config.data_dir, config.series_slices)
    work_dir = Path(tempfile.mkdtemp(prefix="ich-bench-"))
    try:
        start_seconds: list[float] = []
        for run_index in range(config.start_runs - 1):
            logger.info("HTTP: start-up %d of %d", run_index + 1, config.start_runs)
            bench = HttpBench(config.model_store, work_dir / f"start-{run_index}", new_api_key())
            try:
                start_seconds.append(bench.start())
            finally:
                bench.stop()
        bench = HttpBench(config.model_store, work_dir / "main", new_api_key())
        logger.info("HTTP: start-up %d of %d (the measured server)", config.start_runs, config.start_runs)
        start_seconds.append(bench.start())
        try:
            memory_samples = [{"requests": 0, "after": "start", **rss_mib(bench.pid)}]
            serving = served_models(bench)
            segmentation_model = (serving or {}).get("segmentation")
            logger.info("HTTP: %d single-slice requests, segment=false", config.requests)
            single, ids = measure_http_single(bench, png, config, segment=False)
            memory_samples.append(
                {"requests": bench.posted, "after": "single slices, segment=false", **rss_mib(bench.pid)}
            )
            segmented: dict[str, Any] | None = None
            if segmentation_model:
                logger.info("HTTP: %d single-slice requests with segmentation", config.requests)
                segmented, ids = measure_http_single(bench, png, config)
                segmented["model"] = segmentation_model
                memory_samples.append(
                    {"requests": bench.posted, "after": "single slices, segmented", **rss_mib(bench.pid)}
                )
            settled_index = len(memory_samples) - 1
            logger.info("HTTP: %d PDF reports", min(config.pdf_reports, len(ids)))
            pdf = measure_pdf(bench, ids[: config.pdf_reports])
            memory_samples.append({"requests": bench.posted, "after": "PDF reports", **rss_mib(bench.pid)})
            throughput = {}
            for clients in config.concurrency:
                logger.info("HTTP: %d concurrent clients", clients)
                throughput[str(clients)] = measure_throughput(bench, png, clients, config.requests_per_client)
            memory_samples.append({"requests": bench.posted, "after": "throughput", **rss_mib(bench.pid)})
            logger.info("HTTP: memory up to %d requests", config.memory_requests)
            memory = measure_memory(bench, png, config.memory_requests, memory_samples, settled_index)
            memory["malloc_environment"] = malloc_environment(bench.pid)
            # Last, so that the series' larger batches do not enter the single-slice memory figures.
            logger.info("HTTP: study endpoint")
            study = measure_study_http(bench, series, config)
            memory["rss_after_studies_mib"] = rss_mib(bench.pid)["rss_mib"]
        finally:
            bench.stop()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return {
        "segmentation_model": segmentation_model,
        "single_slice": single,
        "single_slice_with_segmentation": segmented,
        "pdf_ms": pdf,
        "throughput": throughput,
        "study": study,
        "start_to_ready_s": {
            **summarize(start_seconds),
            "runs": [round(value, 3) for value in start_seconds],
        },
        "memory": memory,
        "served_models": serving,
    }


def served_models(bench: HttpBench) -> dict[str, Any] | None:
    """The models the server reports on ``/readyz`` (classifier, and segmentation when one runs)."""
    with bench.client() as client:
        models = client.get("/readyz").json().get("models")
    return models if isinstance(models, dict) else None


def measure_memory(
    bench: HttpBench,
    png: bytes,
    total_requests: int,
    samples: list[dict[str, Any]],
    settled_index: int = 1,
) -> dict[str, Any]:
    """Send slices until the server has answered ``total_requests``; its resident memory on the way.

    ``samples`` starts with the reading right after start-up (and any taken between phases).
    Growth is reported from that first reading, and from ``samples[settled_index]`` (the reading
    after the single-slice phases), when the allocators and lazily imported libraries have settled.
    """
    step = max(1, total_requests // 5)
    with bench.client() as client:
        while bench.posted < total_requests:
            bench.post_slice(client, png)
            if bench.posted % step == 0:
                samples.append(
                    {"requests": bench.posted, "after": "more single slices", **rss_mib(bench.pid)}
                )
    final: dict[str, Any] = {"requests": bench.posted, "after": "all requests", **rss_mib(bench.pid)}
    if samples[-1]["requests"] == final["requests"]:
        samples[-1] = final
    else:
        samples.append(final)
    after_start = float(samples[0]["rss_mib"])
    after_all = float(final["rss_mib"])
    settled = samples[settled_index] if 0 < settled_index < len(samples) else final
    settled_rss = float(settled["rss_mib"])
    return {
        "rss_after_start_mib": after_start,
        "rss_after_requests_mib": after_all,
        "peak_rss_mib": final["peak_rss_mib"],
        "requests": final["requests"],
        "growth_percent": round(100.0 * (after_all - after_start) / after_start, 2),
        "settled_after_requests": settled["requests"],
        "growth_after_settling_percent": round(100.0 * (after_all - settled_rss) / settled_rss, 2),
        "samples": samples,
    }


# --------------------------------------------------------------------------------------------
# Ratios, targets, table


def _get(results: dict[str, Any], *keys: str) -> Any:
    value: Any = results
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 2)


def compute_ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Ratios of medians: how far each path is from the compute floor and from the others."""
    floor_slice = _get(results, "in_process", "single_slice", "floor_ms", "median")
    floor_batch = _get(results, "in_process", "series", "floor_batch_ms", "median")
    optimised = _get(results, "in_process", "series", "optimised_ms", "median")
    segmentation_floor = _get(results, "in_process", "segmentation_floor", "floor_ms", "median")
    return {
        "api_slice_over_floor_slice": _ratio(
            _get(results, "http", "single_slice", "end_to_end_ms", "median"), floor_slice
        ),
        "api_slice_with_segmentation_over_floors": _ratio(
            _get(results, "http", "single_slice_with_segmentation", "end_to_end_ms", "median"),
            None if floor_slice is None or segmentation_floor is None else floor_slice + segmentation_floor,
        ),
        "in_process_slice_over_floor_slice": _ratio(
            _get(results, "in_process", "single_slice", "end_to_end_ms", "median"), floor_slice
        ),
        "gradcam_pass_over_floor_slice": _ratio(
            _get(results, "in_process", "single_slice", "forward_and_gradcam_ms", "median"), floor_slice
        ),
        "naive_over_optimised_series": _ratio(
            _get(results, "in_process", "series", "naive_ms", "median"), optimised
        ),
        "optimised_series_over_floor_batch": _ratio(optimised, floor_batch),
        "floor_slice_x40_over_floor_batch": _ratio(
            None
            if floor_slice is None
            else floor_slice * _get(results, "in_process", "series", "num_slices"),
            floor_batch,
        ),
    }


def _target(
    name: str, goal: str, value: float | None, passed: bool | None, note: str = "", info: bool = False
) -> dict[str, Any]:
    return {"name": name, "goal": goal, "value": value, "pass": passed, "info": info, "note": note}


def _check(value: float | None, limit: float, below: bool = True) -> bool | None:
    if value is None:
        return None
    return value < limit if below else value >= limit


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as pass/fail (``None``: not measured in this run).

    When the server segments every slice by default, two rows marked ``info`` follow (never
    pass/fail: the targets were set for classification and Grad-CAM): the API's single slice with
    segmentation, and its ratio to the two bare models' floors added together.
    """
    ratios = results["ratios"]
    api_p50 = _get(results, "http", "single_slice", "end_to_end_ms", "median")
    study = _get(results, "http", "study") or {}
    series_ms = _get(results, "in_process", "series", "optimised_ms", "median")
    series_note = "in-process: decode, predict_many, overlays, PNGs"
    segmentation = _get(results, "http", "segmentation_model")
    if study.get("available"):
        series_ms = _get(study, "end_to_end_ms", "median")
        series_note = f"POST {STUDIES_PATH} over HTTP"
        if segmentation:
            series_note += f", with segmentation ({segmentation})"
    num_slices = _get(results, "in_process", "series", "num_slices")
    if num_slices is not None and num_slices != 40:
        series_note += f"; {num_slices} slices, not 40"
    start = _get(results, "http", "start_to_ready_s", "median")
    growth = _get(results, "http", "memory", "growth_percent")
    targets = [
        _target(
            "api_slice_p50",
            "< 80 ms",
            api_p50,
            _check(api_p50, 80.0),
            "with Grad-CAM, without PDF; segment=false",
        ),
        _target(
            "api_slice_over_floor",
            "< 2x",
            ratios["api_slice_over_floor_slice"],
            _check(ratios["api_slice_over_floor_slice"], 2.0),
            "API p50 (segment=false) / bare model on one ready 1-slice tensor",
        ),
        _target("series_end_to_end", "< 3000 ms", series_ms, _check(series_ms, 3000.0), series_note),
        _target(
            "optimised_vs_naive",
            ">= 3x",
            ratios["naive_over_optimised_series"],
            _check(ratios["naive_over_optimised_series"], 3.0, below=False),
            "naive / optimised, same series, same run",
        ),
        _target("start_to_ready", "< 15 s", start, _check(start, 15.0), "median of the starts"),
        _target(
            "memory_growth",
            "< 10 %",
            growth,
            _check(growth, 10.0),
            f"RSS after {_get(results, 'http', 'memory', 'requests')} requests vs right after start",
        ),
    ]
    segmented_p50 = _get(results, "http", "single_slice_with_segmentation", "end_to_end_ms", "median")
    if segmented_p50 is not None:
        targets += [
            _target(
                "api_slice_segmented_p50",
                "info",
                segmented_p50,
                None,
                f"default request, segmentation {segmentation}; the 80 ms target is without it",
                info=True,
            ),
            _target(
                "api_slice_segmented_over_floors",
                "info",
                ratios.get("api_slice_with_segmentation_over_floors"),
                None,
                "API p50 with segmentation / (classifier floor + segmentation floor)",
                info=True,
            ),
        ]
    return targets


def _stat_row(label: str, stats: dict[str, Any] | None, unit: str = "ms") -> str:
    if not stats:
        return f"  {label:<52} {'n/a':>10}"
    return f"  {label:<52} {stats['median']:>9.1f} {unit:<2} {stats['p95']:>9.1f} {unit:<2} n={stats['n']}"


def _http_single_rows(entry: dict[str, Any]) -> list[str]:
    rows = [_stat_row("end to end (client)", entry["end_to_end_ms"])]
    for name, stats in entry["server_stages_ms"].items():
        rows.append(_stat_row(f"  server {name}", stats))
    rows.append(
        _stat_row("  outside the stages (HTTP, multipart, auth, DB row)", entry.get("outside_stages_ms"))
    )
    return rows


def _sum_of_medians(first: dict[str, Any] | None, second: dict[str, Any] | None) -> float | None:
    if not first or not second:
        return None
    return round(float(first["median"]) + float(second["median"]), 3)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the results: medians, 95th percentiles, ratios and targets."""
    machine = results["machine"]
    model = _get(results, "in_process", "model") or {}
    lines = [
        f"ICH Detect benchmark, {results['timestamp']}",
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), TensorFlow {machine['tensorflow']}, "
        f"load average at start {machine['load_average_at_start']}, "
        f"at end {machine.get('load_average_at_end')}",
        f"model {model.get('name')}/{model.get('version')} ({model.get('image_size')} px, "
        f"{model.get('parameters')} parameters)"
        + (", QUICK RUN: figures not meaningful" if results["quick"] else ""),
    ]
    http = results.get("http")
    if http:
        served = http.get("served_models") or {}
        lines.append(
            f"server default configuration: classification {served.get('classification', 'n/a')}, "
            f"segmentation {http.get('segmentation_model') or 'none'} (PDF, throughput, memory, "
            "start-up and the study upload use it; the targets' single slice sends segment=false)"
        )
    lines += ["", f"  {'':<52} {'median':>12} {'p95':>12}"]
    single = _get(results, "in_process", "single_slice") or {}
    image = _get(results, "in_process", "image") or {}
    lines.append(f"Single slice in-process ({image.get('path')}, {image.get('size')})")
    lines.append(_stat_row("end to end (decode .. PNG encoding)", single.get("end_to_end_ms")))
    for name, stats in single.get("stages_ms", {}).items():
        lines.append(_stat_row(f"  {name}", stats))
    lines.append(_stat_row("bare model, 1 ready tensor (floor)", single.get("floor_ms")))
    lines.append(_stat_row("compiled forward + Grad-CAM pass alone", single.get("forward_and_gradcam_ms")))
    lines.append(
        f"  {'Grad-CAM beyond the forward pass (medians)':<52} {single.get('gradcam_extra_ms', 0):>9.1f} ms"
    )
    http_single = _get(results, "http", "single_slice")
    if http_single:
        lines.append(
            "Single slice through the HTTP API, classification + Grad-CAM only "
            "(segment=false form field; the targets' rows)"
        )
        lines += _http_single_rows(http_single)
        segmented = _get(results, "http", "single_slice_with_segmentation")
        segmentation_floor = _get(results, "in_process", "segmentation_floor")
        if segmented:
            lines.append(
                f"Single slice through the HTTP API with segmentation ({segmented.get('model')}; default "
                "request; information, no target)"
            )
            lines += _http_single_rows(segmented)
        else:
            lines.append(
                "Single slice with segmentation: not measured (the server serves no segmentation model)"
            )
        if segmentation_floor:
            lines.append(
                _stat_row("bare segmentation model, 1 ready tensor (floor)", segmentation_floor["floor_ms"])
            )
            floors = _sum_of_medians(single.get("floor_ms"), segmentation_floor["floor_ms"])
            if floors is not None:
                lines.append(f"  {'classifier floor + segmentation floor (medians)':<52} {floors:>9.1f} ms")
        lines.append(
            _stat_row(
                "PDF report, first GET (default request's predictions)", _get(results, "http", "pdf_ms")
            )
        )
    series = _get(results, "in_process", "series") or {}
    lines.append(f"{series.get('num_slices')}-slice DICOM series in-process")
    lines.append(_stat_row("decode only", series.get("decode_ms")))
    lines.append(_stat_row("optimised (predict_many, batched)", series.get("optimised_ms")))
    lines.append(_stat_row("naive (predict + fresh GradientTape per slice)", series.get("naive_ms")))
    lines.append(_stat_row("bare model on the ready batch (floor)", series.get("floor_batch_ms")))
    lines.append(
        f"  {'slices per second, optimised / naive':<52} {series.get('optimised_slices_per_second', 0):>9.1f}"
        f"    {series.get('naive_slices_per_second', 0):>9.1f}"
    )
    study = _get(results, "http", "study")
    if study is not None:
        if study.get("available"):
            segmentation = _get(results, "http", "segmentation_model")
            label = f"POST {STUDIES_PATH} over HTTP" + (" (with segmentation)" if segmentation else "")
            lines.append(_stat_row(label, study["end_to_end_ms"]))
        else:
            lines.append(f"  {'POST ' + STUDIES_PATH + ' over HTTP':<52} not available ({study['reason']})")
    throughput = _get(results, "http", "throughput")
    if throughput:
        lines.append("Throughput (single slices, default request, concurrent clients)")
        for clients, entry in throughput.items():
            lines.append(
                _stat_row(
                    f"{clients} client(s): {entry['requests_per_second']:.1f} requests/s, latency",
                    entry["latency_ms"],
                )
            )
    start = _get(results, "http", "start_to_ready_s")
    if start:
        lines.append(_stat_row("Start to ready", start, "s"))
    memory = _get(results, "http", "memory")
    if memory:
        lines.append(
            f"Resident memory: {memory['rss_after_start_mib']:.0f} MiB after start, "
            f"{memory['rss_after_requests_mib']:.0f} MiB after {memory['requests']} requests "
            f"({memory['growth_percent']:+.1f} %; {memory['growth_after_settling_percent']:+.1f} % "
            f"from {memory['settled_after_requests']} requests on); "
            f"{memory.get('rss_after_studies_mib', 0):.0f} MiB after the series uploads; server malloc "
            f"settings: {memory.get('malloc_environment') or 'glibc defaults'}"
        )
    lines.append("Ratios (of medians)")
    for name, value in results["ratios"].items():
        lines.append(f"  {name:<52} {'n/a' if value is None else f'{value:.2f}x':>10}")
    lines.append("Targets")
    for target in results["targets"]:
        verdict = (
            "info"
            if target.get("info")
            else {True: "PASS", False: "FAIL", None: "not measured"}[target["pass"]]
        )
        value = target["value"]
        lines.append(
            f"  {target['name']:<32} {target['goal']:<10} {'n/a' if value is None else value:>10}  {verdict:<12} "
            f"{target['note']}"
        )
    return "\n".join(lines)


def run(config: BenchConfig, command: str = "python -m bench") -> dict[str, Any]:
    """Run every measurement, write the JSON to ``config.output`` and return the results."""
    # A missing model or data folder is reported before anything is measured or started.
    newest_bundle(config.model_store, config.model_name)
    pick_slice_png(config.data_dir)
    results: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": config.quick,
        "config": config.to_dict(),
        "machine": machine_info(),
    }
    load, cores = results["machine"]["load_average_at_start"][0], results["machine"]["nproc"]
    if load > 0.5 * cores:
        logger.warning(
            "The machine is busy (load average %.1f on %d cores): the figures will be noisy.", load, cores
        )
    started = time.perf_counter()
    results["in_process"] = run_in_process(config)
    results["in_process"]["segmentation_floor"] = None
    results["http"] = None if config.skip_http else run_http(config)
    served_segmentation = _get(results, "http", "segmentation_model")
    if served_segmentation:
        logger.info("In-process: bare segmentation model %s", served_segmentation)
        results["in_process"]["segmentation_floor"] = measure_segmentation_floor(
            config.model_store, str(served_segmentation), pick_slice_png(config.data_dir).read_bytes(), config
        )
    results["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["ratios"] = compute_ratios(results)
    results["targets"] = evaluate_targets(results)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


def command_line(argv: Sequence[str]) -> str:
    """The command as a person would type it again."""
    return " ".join(["python -m bench", *argv])
