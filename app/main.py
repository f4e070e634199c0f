"""Application factory: ``create_app(settings)``; ``app`` is the instance uvicorn serves."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.api.routes import health, metrics, models, pages, predictions, studies
from app.core.config import PROJECT_ROOT, Settings, get_settings
from app.core.errors import InvalidSettings, install_error_handlers
from app.core.limits import BodySizeLimit, upload_limit_bytes
from app.core.logs import RequestObserver, configure_logging
from app.core.metrics import Metrics
from app.core.ratelimit import RateLimiter
from app.core.security import SecurityHeaders
from app.core.sessions import SessionMiddleware
from app.core.startup import ensure_api_key
from app.db import Database, stored_ids
from app.services.auth import KeyStore
from app.services.queue import JobQueue, QueueCollector, RedisJobMetrics
from app.services.storage import FileStore

if TYPE_CHECKING:
    from app.services.jobs import JobMetrics, StudyJobs
    from app.services.pacs import PacsService, StudyWatcher
    from app.services.registry import ModelRegistry
    from app.services.studies import StudyService

logger = logging.getLogger("app")

DISCLAIMER = "Decision support only. Not for clinical use."


def configure_tensorflow(threads: int) -> None:
    """Use ``threads`` threads inside each TensorFlow operation and one between them (0: its default)."""
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            logger.debug("TensorFlow threads were already configured.")


def prepare_process(settings: Settings) -> None:
    """Logging, the report fonts and TensorFlow's threads: what the whole process shares.

    Without the fonts the PDF reports would print names as empty boxes, so the service refuses
    to start.
    """
    from app.services.reporting import ReportFontsMissing, register_fonts

    configure_logging(settings.log_level, settings.log_format)
    try:
        register_fonts()
    except ReportFontsMissing as error:
        logger.critical("%s", error)
        raise
    configure_tensorflow(settings.inference_threads)


def open_storage(settings: Settings) -> tuple[Database, FileStore]:
    """The database (its schema upgraded unless turned off) and the result files.

    Result folders whose database row never committed (an interrupted run) are removed.
    """
    from app.db import Prediction, Study
    from app.services.storage import JOB_INPUTS, STUDIES

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.resolved_database_url)
    if settings.migrate_on_start:
        database.migrate()
    files = FileStore(settings.resolved_storage_dir)
    files.prepare()
    removed = files.remove_incomplete(stored_ids(database, Prediction))
    removed += files.remove_incomplete(stored_ids(database, Study), kind=STUDIES)
    removed += files.remove_incomplete(stored_ids(database, Study), kind=JOB_INPUTS)
    if removed:
        logger.warning("Removed %d incomplete result folders left by an interrupted run.", removed)
    return database, files


def use_site_operating_point(settings: Settings, registry: ModelRegistry) -> None:
    """Decide with the site's operating point, when one is set, on the model that serves.

    Raises:
        InvalidSettings: the operating point cannot be used (the message says why).
    """
    from app.services.operating_points import site_operating_point

    try:
        operating_point = site_operating_point(
            settings, registry.get().bundle.card if registry.ready else None
        )
    except InvalidSettings as exc:
        logger.error("Not starting: %s", exc)
        raise
    if operating_point is not None:
        registry.use_operating_point(operating_point)
        logger.info(
            "Deciding with the site operating point: slices at %.6g (%s), studies at %.6g (%s).",
            operating_point.slice.value,
            operating_point.slice.source,
            operating_point.study.value,
            operating_point.study.source,
        )


def load_models(settings: Settings) -> ModelRegistry:
    """The models of the store, deciding with the site's operating point when one is set.

    A missing default model leaves the service up (predictions answer 503); a missing
    segmentation model leaves results without outlines. Both are logged.

    Raises:
        InvalidSettings: the operating point cannot be used (the message says why).
    """
    from app.services.registry import ModelRegistry

    registry = ModelRegistry.from_store(
        settings.model_store, settings.default_model, settings.segmentation_model
    )
    if not registry.ready:
        logger.error(
            "Default model %r not found in %s; predictions answer 503.",
            settings.default_model,
            settings.model_store,
        )
    use_site_operating_point(settings, registry)
    if settings.segmentation_model and registry.outliner() is None:
        logger.warning(
            "Segmentation model %r not found in %s; results carry no outlines (segmentation: null).",
            settings.segmentation_model,
            settings.model_store,
        )
    return registry


def attach_services(
    app: FastAPI, settings: Settings, database: Database, files: FileStore, registry: ModelRegistry
) -> None:
    """Put the stores and services the routes use on ``app.state``; warm the model up."""
    from app.services.predictions import PredictionService

    keys = KeyStore(database, settings.api_key_list())
    ensure_api_key(settings, keys)
    app.state.settings = settings
    app.state.database = database
    app.state.files = files
    app.state.registry = registry
    app.state.keys = keys
    app.state.predictions = PredictionService(
        database, files, registry, settings.max_image_pixels, metrics=app.state.metrics
    )
    app.state.predictions.warm_up()
    queue: JobQueue | None = app.state.job_queue
    app.state.studies, app.state.pacs, app.state.jobs = build_study_services(
        settings,
        database,
        files,
        registry,
        app.state.metrics,
        # With the job queue, the jobs this process gives up are counted with the workers' ones.
        job_metrics=app.state.metrics if queue is None else RedisJobMetrics(queue.redis),
        send=queue.send if queue is not None else None,
    )


def build_study_services(
    settings: Settings,
    database: Database,
    files: FileStore,
    registry: ModelRegistry,
    metrics: Metrics | None,
    job_metrics: JobMetrics | None,
    send: Callable[[str], bool] | None = None,
) -> tuple[StudyService, PacsService, StudyJobs]:
    """The studies, the PACS and the study jobs, as the service and the job queue's workers use them.

    ``metrics``: where inference is counted; ``job_metrics``: where the jobs are; ``send``: send each
    job to the job queue instead of this process's worker threads.
    """
    from app.services.claims import ClaimStore
    from app.services.jobs import StudyJobs
    from app.services.pacs import PacsClient, PacsService
    from app.services.studies import StudyService
    from ml.data.series import ArchiveLimits

    studies = StudyService(
        database,
        files,
        registry,
        settings.max_image_pixels,
        max_slices=settings.max_study_slices,
        # A ZIP may unpack to a few times its own size (DICOM compresses about 2:1 to 4:1).
        archive_limits=ArchiveLimits(max_total_bytes=4 * settings.max_study_upload_bytes),
        metrics=metrics,
    )
    pacs = PacsService(
        PacsClient.from_settings(settings),
        studies,
        ClaimStore(database, settings.analysis_claim_timeout_seconds),
    )
    jobs = StudyJobs(
        studies,
        workers=settings.study_job_workers,
        max_attempts=settings.study_job_max_attempts,
        timeout_seconds=settings.analysis_claim_timeout_seconds,
        metrics=job_metrics,
        pacs=pacs,
        send=send,
    )
    return studies, pacs, jobs


def start_watcher(settings: Settings, pacs: PacsService) -> StudyWatcher | None:
    """Poll the PACS for new CT studies when a DICOMweb server and an interval are set."""
    from app.services.pacs import StudyWatcher

    if not (settings.dicomweb_url and settings.dicomweb_poll_seconds > 0):
        return None
    if settings.job_queue_url:
        # The job queue's workers poll, in turns, and queue what they find (app.worker).
        return None
    watcher = StudyWatcher(pacs, settings.dicomweb_poll_seconds, settings.dicomweb_poll_lookback_days)
    watcher.start()
    logger.info("Watching the PACS for new CT studies every %g s.", settings.dicomweb_poll_seconds)
    return watcher


def open_job_queue(settings: Settings) -> JobQueue | None:
    """The job queue when ``ICH_JOB_QUEUE_URL`` is set (nothing connects until a job is sent)."""
    if not settings.job_queue_url:
        return None
    return JobQueue(settings.job_queue_url, visibility_timeout=settings.analysis_claim_timeout_seconds)


@asynccontextmanager
async def lifespan(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Start the service once (storage, models, services, study jobs, PACS watcher); stop it on shutdown."""
    prepare_process(settings)
    database, files = open_storage(settings)
    try:
        registry = load_models(settings)
    except InvalidSettings:
        database.dispose()
        raise
    attach_services(app, settings, database, files, registry)
    # Jobs a stopped process left queued or running are taken up again.
    app.state.jobs.start()
    watcher = start_watcher(settings, app.state.pacs)
    app.state.watcher = watcher
    logger.info("Ready: models %s", [f"{m['name']}/{m['version']}" for m in registry.describe()])
    yield
    if watcher is not None:
        watcher.stop()
    app.state.jobs.stop()
    if app.state.job_queue is not None:
        app.state.job_queue.close()
    database.dispose()


def add_routes_and_middleware(app: FastAPI, settings: Settings) -> None:
    """The routers, the static files and the middleware, in the order their layers need.

    Starlette wraps each middleware added around those before it, so the last one added is the
    outermost layer.
    """
    study_limit = upload_limit_bytes(settings.max_study_upload_bytes)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=upload_limit_bytes(settings.max_upload_bytes),
        path_limits={studies.STUDY_UPLOAD_PATH: study_limit, pages.STUDY_UPLOAD_PAGE: study_limit},
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(predictions.router)
    app.include_router(studies.router)
    app.include_router(models.router)
    app.add_middleware(SessionMiddleware, settings=settings)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=PROJECT_ROOT / "static"), name="static")
    pages.install_page_error_handler(app)
    app.add_middleware(SecurityHeaders)
    # Added last, so it is the outermost layer and sees every response, including 413 and 500.
    app.add_middleware(RequestObserver, metrics=app.state.metrics)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; nothing heavy happens until the lifespan starts."""
    settings = settings or get_settings()
    app = FastAPI(
        title="ICH Detect",
        summary="Intracranial haemorrhage detection on brain CT. " + DISCLAIMER,
        version="0.1.0",
        lifespan=partial(lifespan, settings=settings),
    )
    app.state.settings = settings
    app.state.job_queue = open_job_queue(settings)
    app.state.metrics = Metrics(
        QueueCollector(app.state.job_queue) if app.state.job_queue is not None else None
    )
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    add_routes_and_middleware(app, settings)
    return app


app = create_app()
