"""Web pages for clinicians: sign-in, upload, result, worklist and model card, rendered on the server."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import (
    APIRouter,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import (
    KeyStoreDep,
    PredictionServiceDep,
    RegistryDep,
    SettingsDep,
    StudyServiceDep,
    limit_upload,
)
from app.api.routes.predictions import FILE_TYPES, read_limited
from app.api.routes.studies import file_type, read_uploads
from app.api.web_auth import (
    HOME,
    CsrfField,
    CsrfRejected,
    PageUser,
    SignInRequired,
    check_csrf,
    safe_next,
    session_principal,
    signin_url,
)
from app.core.config import PROJECT_ROOT, Settings
from app.core.errors import InvalidUpload, ServiceError, describe_validation, malformed_id
from app.core.labels import Label
from app.core.sessions import CSRF_FIELD, csrf_token, end_session, start_signed_in_session
from app.db import Prediction, Study
from app.schemas import UploadForm
from app.services.auth import hash_key
from app.services.inference import ModelRegistry
from app.services.operating_points import OperatingPointInUse
from app.services.predictions import UploadFields, prediction_scope
from app.services.segmentation import (
    CONTOURS_FILE,
    FALLBACK_NOTE,
    area_text,
    help_sentences,
    legend,
    study_summary_sentences,
)
from app.services.storage import STUDIES
from app.services.studies import StudyRecord, slice_file
from ml.evaluation.robustness import PERTURBATION_TITLES

logger = logging.getLogger(__name__)
templates = Jinja2Templates(directory=PROJECT_ROOT / "templates")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; "
        "base-uri 'self'; form-action 'self'"
    ),
    "Referrer-Policy": "same-origin",
}
STUDY_UPLOAD_PAGE = "/studies/upload"
LABEL_TEXT: dict[str, str] = {
    Label.HEMORRHAGE: "Haemorrhage suspected",
    Label.NO_HEMORRHAGE: "No haemorrhage detected",
    Label.OUT_OF_SCOPE: "Not a head CT slice",
}
DATASET_TITLES = {"all": "All images", "head_ct": "head_ct (Kaggle)", "ct_ich": "CT-ICH (PhysioNet)"}
METRIC_TITLES = {
    "auc": "AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision",
    "f1": "F1",
    "accuracy": "Accuracy",
}
TIMING_TITLES = {
    "decode": "Reading the file",
    "preprocess": "Preprocessing",
    "model_and_gradcam": "Model and Grad-CAM",
    "segmentation": "Outlines (segmentation)",
    "postprocess": "Heat map overlay",
    "scope_check": "Scope check",
    "encode": "Encoding images",
    "scope_check_and_encode": "Scope check and images, side by side",
    "storage": "Saving",
    "total": "Total",
}
PLOTS = {
    "roc_test": ("ROC curve, test split", "ROC curve of the model on the held-out test split."),
    "calibration_test": (
        "Calibration, test split",
        "Calibration plot: predicted probability against the observed share of haemorrhage, test split.",
    ),
    "confusion_test": (
        "Confusion matrix, test split",
        "Confusion matrix at the decision threshold on the test split.",
    ),
}
SERVER_ERROR_MESSAGE = (
    "Something went wrong on the server and the page could not be shown. Nothing you did caused it; "
    "try again in a moment, and tell the administrator if it keeps happening (the error was logged)."
)
CSRF_MESSAGE = (
    "This form has expired or did not come from this site, so it was not accepted. "
    "Reload the page and try again (cookies must be allowed for this site)."
)


AnyResponse = TypeVar("AnyResponse", bound=Response)


def add_security_headers(response: AnyResponse) -> AnyResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def render_error(request: Request, status_code: int, message: str, title: str | None = None) -> HTMLResponse:
    titles = {
        400: "The request could not be used",
        403: "Not allowed",
        404: "Not found",
        405: "Not allowed",
        413: "File too large",
        415: "File not readable",
        429: "Too many uploads",
        503: "Service not ready",
    }
    response = templates.TemplateResponse(
        request,
        "error.html",
        page_context(
            request,
            title=title or titles.get(status_code, "Something went wrong"),
            message=message,
            status_code=status_code,
        ),
        status_code=status_code,
    )
    return add_security_headers(response)


class PageRoute(APIRoute):
    """A page route: errors render as HTML pages, and every response carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await original(request)
            except SignInRequired:
                response = RedirectResponse(signin_url(request), status.HTTP_303_SEE_OTHER)
            except CsrfRejected:
                response = render_error(request, status.HTTP_403_FORBIDDEN, CSRF_MESSAGE, "Form not accepted")
            except ServiceError as exc:
                response = render_error(request, exc.status_code, exc.detail)
            except StarletteHTTPException as exc:
                response = render_error(request, exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                not_found = malformed_id(exc)
                if not_found is not None:
                    response = render_error(request, not_found.status_code, not_found.detail)
                else:
                    message = "The request was not understood. " + describe_validation(exc)
                    response = render_error(request, status.HTTP_400_BAD_REQUEST, message)
            except Exception:
                # The trace goes to the log; the browser gets a page, never the trace.
                logger.exception("Unexpected error on page %s", self.path)
                response = render_error(request, status.HTTP_500_INTERNAL_SERVER_ERROR, SERVER_ERROR_MESSAGE)
            return add_security_headers(response)

        return handle


router = APIRouter(tags=["pages"], route_class=PageRoute, include_in_schema=False)


def default_model(request: Request) -> dict[str, str] | None:
    try:
        classifier = request.app.state.registry.get()
    except (ServiceError, AttributeError):
        return None
    return {"name": classifier.name, "version": classifier.version}


def page_context(request: Request, **values: Any) -> dict[str, Any]:
    """What every page needs: the user, the CSRF token, the default model and a one-time message."""
    settings: Settings = request.app.state.settings
    try:
        principal = session_principal(request)
    except Exception:
        # An error page must render even when the key store cannot be read.
        principal = None
    flash = request.session.pop("flash", None)
    return {
        "user": principal,
        "auth_enabled": settings.auth_enabled,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token(request.session),
        "model": default_model(request),
        "flash": flash if isinstance(flash, str) else None,
        "label_text": LABEL_TEXT,
        "positive_label": Label.HEMORRHAGE,
        **values,
    }


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, page_context(request, **values), status_code=status_code
    )


def format_datetime(value: datetime | None) -> str:
    return value.strftime("%d %b %Y, %H:%M UTC") if value is not None else ""


def format_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


templates.env.filters["datetime"] = format_datetime
templates.env.filters["percent"] = format_percent


def result_view(prediction: Prediction) -> dict[str, Any]:
    """What the result page shows, worked out here so the template stays simple."""
    positive = prediction.label == Label.HEMORRHAGE
    in_scope, scope_reasons = prediction_scope(prediction)
    study = [
        ("Patient name", prediction.patient_name),
        ("Patient ID", prediction.patient_id),
        ("Study", prediction.study_description),
        ("Study date", prediction.study_date),
        ("Requesting clinician", prediction.requesting_clinician),
    ]
    timings = prediction.timings_ms or {}
    return {
        "positive": positive,
        "in_scope": in_scope,
        "scope_reasons": scope_reasons,
        "label_text": LABEL_TEXT.get(prediction.label, prediction.label),
        "probability_percent": prediction.probability * 100.0,
        "threshold_percent": prediction.threshold * 100.0,
        "study": [(title, value) for title, value in study if value],
        "timings": [
            (TIMING_TITLES.get(stage, stage.replace("_", " ").capitalize()), float(value))
            for stage, value in timings.items()
            if isinstance(value, int | float)
        ],
        "base": f"/predictions/{prediction.id}",
    }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def segmentation_view(record: Any, card: dict[str, Any], contours: str) -> dict[str, Any] | None:
    """The outlines of one slice for the result page: legend rows, totals and the help text."""
    if not isinstance(record, dict) or not isinstance(record.get("subtypes"), dict):
        return None
    blood_px = int(record.get("blood_area_px") or 0)
    return {
        "model": _mapping(record.get("model")),
        "rows": legend(record),
        "contours": contours,
        "blood": area_text(blood_px, record.get("blood_area_mm2")) if blood_px else None,
        "millimetres": record.get("blood_area_mm2") is not None,
        "help": help_sentences(card) if card else [FALLBACK_NOTE],
    }


def study_segmentation_view(stored: Any, card: dict[str, Any]) -> dict[str, Any] | None:
    """The study's volumes for the study page: voxel count, ABC/2, each subtype, or why there are none."""
    if not isinstance(stored, dict) or not isinstance(stored.get("subtypes"), dict):
        return None
    abc2 = _mapping(stored.get("abc2"))
    return {
        "model": _mapping(stored.get("model")),
        "rows": legend(stored),
        "volume_ml": stored.get("volume_ml"),
        "reason": stored.get("volume_unavailable_reason"),
        "abc2": abc2 or None,
        "summary": study_summary_sentences(stored),
        "help": help_sentences(card) if card else [FALLBACK_NOTE],
    }


def _number(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _metric_cell(entry: Any) -> dict[str, str]:
    entry = _mapping(entry)
    interval = entry.get("ci95")
    low, high = (
        (interval[0], interval[1]) if isinstance(interval, list) and len(interval) == 2 else (None, None)
    )
    text = f"{_number(low)} to {_number(high)}" if low is not None and high is not None else ""
    return {"value": _number(entry.get("value")), "interval": text}


def metrics_view(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of one split's metrics: dataset and level, counts, and each metric with its interval."""
    rows = []
    datasets = sorted(metrics, key=lambda name: (name != "all", name))
    for dataset in datasets:
        for level in ("slice", "patient"):
            summary = _mapping(_mapping(metrics.get(dataset)).get(level))
            values = _mapping(summary.get("metrics"))
            if not values:
                continue
            rows.append(
                {
                    "dataset": DATASET_TITLES.get(dataset, dataset),
                    "level": "per patient" if level == "patient" else "per slice",
                    "n": summary.get("n"),
                    "n_positive": summary.get("n_positive"),
                    "cells": {name: _metric_cell(values.get(name)) for name in METRIC_TITLES},
                }
            )
    return rows


def card_view(card: dict[str, Any]) -> dict[str, Any]:
    """A model card in readable pieces; any field may be missing (small or older cards)."""
    facts: list[tuple[str, str]] = []
    if card.get("task"):
        facts.append(("Task", str(card["task"])))
    if card.get("created"):
        facts.append(("Created", str(card["created"]).replace("T", " ").replace("Z", " UTC")))
    if card.get("backbone"):
        facts.append(("Architecture", f"{card['backbone']} convolutional network"))
    if isinstance(card.get("parameters"), int):
        facts.append(("Parameters", f"{card['parameters']:,}"))
    shape = card.get("input_shape")
    if isinstance(shape, list) and shape:
        facts.append(("Input", " × ".join(str(size) for size in shape)))
    if card.get("threshold") is not None:
        rule = f" ({card['threshold_rule']})" if card.get("threshold_rule") else ""
        facts.append(("Decision threshold", f"{_number(card.get('threshold'), 3)}{rule}"))
    if card.get("cpu_latency_ms_per_slice") is not None:
        facts.append(("CPU time per slice", f"{_number(card.get('cpu_latency_ms_per_slice'), 1)} ms"))
    training = _mapping(card.get("training"))
    counts = [
        {
            "split": split.capitalize(),
            "images": _mapping(values).get("images"),
            "positive": _mapping(values).get("positive"),
            "patients": _mapping(values).get("patients"),
        }
        for split, values in _mapping(training.get("counts")).items()
    ]
    training_facts: list[tuple[str, str]] = []
    if isinstance(training.get("datasets"), list):
        names = [DATASET_TITLES.get(str(name), str(name)) for name in training["datasets"]]
        training_facts.append(("Datasets", ", ".join(names)))
    if training.get("split"):
        training_facts.append(("Split", str(training["split"])))
    if training.get("epochs_run") is not None:
        training_facts.append(("Epochs", str(training["epochs_run"])))
    if training.get("seconds") is not None:
        training_facts.append(("Training time", f"{_number(training['seconds'] / 60, 1)} minutes"))
    if training.get("hardware"):
        training_facts.append(("Hardware", str(training["hardware"])))
    metrics = _mapping(card.get("metrics"))
    splits = [
        {"name": split, "title": title, "rows": metrics_view(_mapping(metrics.get(split)))}
        for split, title in (("validation", "Validation split"), ("test", "Test split"))
    ]
    robustness = _mapping(card.get("robustness"))
    perturbations = [
        {
            "name": PERTURBATION_TITLES.get(name, name.replace("_", " ").capitalize()),
            "mean": _number(_mapping(values).get("mean_abs_change"), 3),
            "max": _number(_mapping(values).get("max_abs_change"), 3),
            "flips": format_percent(_mapping(values).get("flip_rate")),
        }
        for name, values in robustness.items()
        if isinstance(values, dict)
    ]
    external = _mapping(metrics.get("external_bhsd_seg"))
    unseen = None
    if external.get("slices"):
        unseen = {
            "slices": external.get("slices"),
            "slices_flagged": external.get("slices_flagged"),
            "sensitivity": _metric_cell(
                {"value": external.get("sensitivity"), "ci95": external.get("sensitivity_ci95")}
            ),
            "scans": external.get("scans"),
            "scans_flagged": external.get("scans_flagged"),
            "scan_sensitivity": _metric_cell(
                {"value": external.get("scan_sensitivity"), "ci95": external.get("scan_sensitivity_ci95")}
            ),
        }
    limitations = card.get("limitations")
    return {
        "name": card.get("name", "unnamed model"),
        "version": card.get("version", "unknown"),
        "facts": facts,
        "intended_use": card.get("intended_use"),
        "limitations": [str(item) for item in limitations] if isinstance(limitations, list) else [],
        "training_facts": training_facts,
        "counts": counts,
        "splits": [split for split in splits if split["rows"]],
        "metric_titles": METRIC_TITLES,
        "unseen": unseen,
        "robustness_n": robustness.get("n"),
        "perturbations": perturbations,
        "preprocessing": [
            (str(key), str(value)) for key, value in _mapping(card.get("preprocessing")).items()
        ],
        "reproduce": card.get("reproduce"),
    }


@router.get("/")
def home() -> RedirectResponse:
    """The upload page."""
    return RedirectResponse(HOME, status.HTTP_303_SEE_OTHER)


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, settings: SettingsDep, next: str = "") -> Response:
    """The sign-in form (an API key opens a browser session)."""
    if not settings.auth_enabled or session_principal(request) is not None:
        return RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    return render(request, "signin.html", title="Sign in", next=safe_next(next))


@router.post("/signin", response_class=HTMLResponse)
def sign_in(
    request: Request,
    settings: SettingsDep,
    keys: KeyStoreDep,
    csrf: CsrfField = "",
    api_key: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check an API key and start a signed-in session."""
    check_csrf(request, csrf)
    target = safe_next(next)
    if not settings.auth_enabled:
        return RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    key = api_key.strip()
    principal = keys.authenticate(key) if key else None
    if principal is None:
        message = (
            "That API key is not valid or has been revoked. Check it and try again."
            if key
            else "Enter your API key to sign in."
        )
        code = status.HTTP_403_FORBIDDEN if key else status.HTTP_400_BAD_REQUEST
        return render(request, "signin.html", code, title="Sign in", next=target, error=message)
    start_signed_in_session(request.session, hash_key(key), principal.prefix, principal.name)
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


@router.post("/signout")
def sign_out(request: Request, settings: SettingsDep, csrf: CsrfField = "") -> RedirectResponse:
    """End the browser session."""
    check_csrf(request, csrf)
    end_session(request.session)
    request.session["flash"] = "You have signed out."
    return RedirectResponse("/signin" if settings.auth_enabled else HOME, status.HTTP_303_SEE_OTHER)


def upload_values(**fields: str | None) -> dict[str, str]:
    return {name: value or "" for name, value in fields.items()}


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, user: PageUser, settings: SettingsDep) -> Response:
    """The upload form: drop or choose a CT slice, with optional patient and study fields."""
    return render(
        request,
        "upload.html",
        title="Analyse a CT slice",
        nav="upload",
        fields=upload_values(),
        max_bytes=settings.max_upload_bytes,
        max_mib=settings.max_upload_mb,
        study_max_bytes=settings.max_study_upload_bytes,
        study_max_mib=settings.max_study_upload_mb,
    )


@router.post("/upload", response_class=HTMLResponse)
async def upload(
    request: Request,
    user: PageUser,
    service: PredictionServiceDep,
    settings: SettingsDep,
    form: Annotated[UploadForm, Form()],
    csrf: CsrfField = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Analyse the uploaded slice, then show its result (errors re-show the form with a message)."""
    check_csrf(request, csrf)
    values = upload_values(**form.model_dump())
    file_name = file.filename if file is not None and file.filename else ""
    try:
        limit_upload(request, user)
        if file is None or (not file_name and not file.size):
            raise InvalidUpload("Choose a CT slice to analyse: a PNG, JPEG or DICOM file.")
        fields = UploadFields.from_form(**form.model_dump())
        data = await read_limited(file, settings.max_upload_bytes)
        if not data:
            raise InvalidUpload("The file is empty. Choose a CT slice: a PNG, JPEG or DICOM file.")
        prediction = await run_in_threadpool(service.create, data, fields)
    except ServiceError as exc:
        prefix = f"“{file_name}” could not be analysed. " if file_name else ""
        return render(
            request,
            "upload.html",
            exc.status_code,
            title="Analyse a CT slice",
            nav="upload",
            fields=values,
            error=prefix + exc.detail,
            max_bytes=settings.max_upload_bytes,
            max_mib=settings.max_upload_mb,
            study_max_bytes=settings.max_study_upload_bytes,
            study_max_mib=settings.max_study_upload_mb,
        )
    return RedirectResponse(f"/predictions/{prediction.id}", status.HTTP_303_SEE_OTHER)


@router.post(STUDY_UPLOAD_PAGE, response_class=HTMLResponse)
async def upload_study(
    request: Request,
    user: PageUser,
    service: StudyServiceDep,
    settings: SettingsDep,
    csrf: CsrfField = "",
    files: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    """Analyse an uploaded CT series (several DICOM files or a ZIP), then show the study."""
    check_csrf(request, csrf)
    chosen = [item for item in files or [] if item.filename or item.size]
    try:
        limit_upload(request, user)
        if not chosen:
            raise InvalidUpload("Choose the DICOM files of one CT series, or one ZIP of them.")
        uploads = await read_uploads(chosen, settings.max_study_upload_bytes)
        record = await run_in_threadpool(service.create, uploads, UploadFields())
    except ServiceError as exc:
        return render(
            request,
            "upload.html",
            exc.status_code,
            title="Analyse a CT slice",
            nav="upload",
            fields=upload_values(),
            study_error="The series could not be analysed. " + exc.detail,
            max_bytes=settings.max_upload_bytes,
            max_mib=settings.max_upload_mb,
            study_max_bytes=settings.max_study_upload_bytes,
            study_max_mib=settings.max_study_upload_mb,
        )
    return RedirectResponse(f"/studies/{record.study.id}", status.HTTP_303_SEE_OTHER)


CHART_WIDTH = 600.0
CHART_HEIGHT = 160.0


def study_view(record: StudyRecord) -> dict[str, Any]:
    """What the study page shows: the decision, the slices for the scroller and the chart's geometry."""
    study = record.study
    segmented = isinstance((study.details or {}).get("segmentation"), dict)
    positive = study.label == Label.HEMORRHAGE
    key_slices = record.key_slices
    count = max(1, len(record.slices))

    def x(index: int) -> float:
        return CHART_WIDTH / 2 if count == 1 else index / (count - 1) * CHART_WIDTH

    def y(probability: float) -> float:
        return (1.0 - probability) * CHART_HEIGHT

    base = f"/studies/{study.id}"
    slices = [
        {
            "index": item.slice_index,
            "number": item.slice_index + 1,
            "probability": item.probability,
            "percent": f"{item.probability * 100:.1f}%",
            "position": f"{item.position_mm:.1f} mm" if item.position_mm is not None else "",
            "key": item.slice_index in key_slices,
            "overlay": f"{base}/{slice_file('overlay', item.slice_index)}",
            "image": f"{base}/{slice_file('slice', item.slice_index)}",
            "contours": f"{base}/{slice_file('contours', item.slice_index)}" if segmented else "",
            "x": f"{x(item.slice_index):.1f}",
            "y": f"{y(item.probability):.1f}",
        }
        for item in record.slices
    ]
    start = key_slices[0] if key_slices else 0
    study_facts = [
        ("Patient name", study.patient_name),
        ("Patient ID", study.patient_id),
        ("Study", study.study_description),
        ("Study date", study.study_date),
        ("Requesting clinician", study.requesting_clinician),
    ]
    return {
        "positive": positive,
        "label_text": LABEL_TEXT.get(study.label, study.label),
        "probability_percent": study.probability * 100.0,
        "threshold_percent": study.threshold * 100.0,
        "slices": slices,
        "start": start,
        "start_slice": slices[start] if slices else None,
        "key_slices": [slices[index] for index in key_slices if index < len(slices)],
        "points": " ".join(f"{item['x']},{item['y']}" for item in slices),
        "threshold_y": f"{y(study.threshold):.1f}",
        "chart_width": CHART_WIDTH,
        "chart_height": CHART_HEIGHT,
        "study": [(title, value) for title, value in study_facts if value],
        "skipped": record.skipped,
        "stored_in_pacs": (study.details or {}).get("stored_in_pacs", []),
        "base": base,
    }


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(
    study_id: uuid.UUID, request: Request, user: PageUser, service: StudyServiceDep, registry: RegistryDep
) -> Response:
    """One study: the decision, a slice scroller with the overlay on each slice, the chart and the volumes."""
    record = service.get(str(study_id))
    stored = (record.study.details or {}).get("segmentation")
    segmentation = study_segmentation_view(stored, registry.outline_card(stored))
    return render(
        request,
        "study.html",
        title="Study result",
        study=record.study,
        view=study_view(record),
        segmentation=segmentation,
    )


@router.get("/studies/{study_id}/{file_name}")
def study_file(
    study_id: uuid.UUID,
    file_name: str,
    user: PageUser,
    service: StudyServiceDep,
) -> Response:
    """A slice image, an overlay or the PDF report of one study, for the signed-in browser."""
    if not STUDIES.allows(file_name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No file {file_name!r} belongs to a study.")
    identifier = str(study_id)
    data = service.read_file(identifier, file_name)
    headers = {"Cache-Control": "private, max-age=300"}
    if file_name.endswith(".pdf"):
        headers["Content-Disposition"] = f'attachment; filename="ich-study-report-{identifier}.pdf"'
    return Response(content=data, media_type=file_type(file_name), headers=headers)


@router.post("/studies/{study_id}/delete")
def delete_study_page(
    study_id: uuid.UUID,
    request: Request,
    user: PageUser,
    service: StudyServiceDep,
    csrf: CsrfField = "",
) -> RedirectResponse:
    """Delete one study analysis and its files."""
    check_csrf(request, csrf)
    service.delete(str(study_id))
    request.session["flash"] = "The study analysis and its images were deleted."
    return RedirectResponse("/worklist", status.HTTP_303_SEE_OTHER)


@router.get("/predictions/{prediction_id}", response_class=HTMLResponse)
def result_page(
    prediction_id: uuid.UUID,
    request: Request,
    user: PageUser,
    service: PredictionServiceDep,
    registry: RegistryDep,
) -> Response:
    """One analysis: the slice with its outlines beside its heat map, the probability, the model, downloads."""
    prediction = service.get(str(prediction_id))
    view = result_view(prediction)
    stored = (prediction.details or {}).get("segmentation")
    segmentation = None
    if view["in_scope"]:
        segmentation = segmentation_view(
            stored,
            registry.outline_card(stored),
            f"{view['base']}/{CONTOURS_FILE}",
        )
    return render(
        request,
        "result.html",
        title="Result",
        prediction=prediction,
        view=view,
        segmentation=segmentation,
    )


@router.get("/predictions/{prediction_id}/{file_name}")
def prediction_file(
    prediction_id: uuid.UUID,
    file_name: str,
    user: PageUser,
    service: PredictionServiceDep,
    download: bool = False,
) -> Response:
    """An image or the PDF report of one analysis, for the signed-in browser."""
    if file_name not in FILE_TYPES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No file {file_name!r} belongs to an analysis.")
    identifier = str(prediction_id)
    data = service.read_file(identifier, file_name)
    headers = {"Cache-Control": "private, max-age=300"}
    if download or file_name.endswith(".pdf"):
        stem, suffix = file_name.rsplit(".", 1)
        kind = "report" if suffix == "pdf" else stem
        headers["Content-Disposition"] = f'attachment; filename="ich-{kind}-{identifier}.{suffix}"'
    return Response(content=data, media_type=FILE_TYPES[file_name], headers=headers)


@router.post("/predictions/{prediction_id}/delete")
def delete_analysis(
    prediction_id: uuid.UUID,
    request: Request,
    user: PageUser,
    service: PredictionServiceDep,
    csrf: CsrfField = "",
) -> RedirectResponse:
    """Delete one analysis and its files."""
    check_csrf(request, csrf)
    service.delete(str(prediction_id))
    request.session["flash"] = "The analysis and its images were deleted."
    return RedirectResponse("/worklist", status.HTTP_303_SEE_OTHER)


def current_decision(
    registry: ModelRegistry,
    record: Prediction | Study,
) -> dict[str, Any]:
    """What the operating point in use now would decide for a stored result, beside what decided it.

    ``state`` is ``"same"`` (the threshold it was decided with is still in use), ``"different"``
    (another threshold now: ``threshold``, ``source``, ``label`` and whether the label ``changed``)
    or ``"unknown"`` (its model is no longer loaded, or the image was not a head CT slice).
    """
    point = registry.operating_point(record.model_name, record.model_version)
    if point is None or record.label == Label.OUT_OF_SCOPE:
        return {"state": "unknown"}
    if isinstance(record, Study):
        if record.aggregation != point.aggregation:
            return {"state": "unknown"}
        threshold = point.study
    else:
        threshold = point.slice
    if threshold.value == record.threshold:
        return {"state": "same", "source": threshold.source}
    label = Label.decided(threshold.flags(record.probability))
    return {
        "state": "different",
        "threshold": threshold.value,
        "source": threshold.source,
        "label": label,
        "changed": label != record.label,
    }


@router.get("/worklist", response_class=HTMLResponse)
def worklist_page(
    request: Request,
    user: PageUser,
    service: PredictionServiceDep,
    study_service: StudyServiceDep,
    registry: RegistryDep,
    patient_id: Annotated[str, Query(max_length=100)] = "",
    result: Literal["all", Label.HEMORRHAGE, Label.NO_HEMORRHAGE, Label.OUT_OF_SCOPE] = "all",
    order: Literal["newest", "positives"] = "newest",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """Analysed images, newest first or haemorrhage-suspected first, searchable by patient ID."""
    search = patient_id.strip()
    items, total = service.list(
        page, page_size, None if result == "all" else result, search or None, order == "positives"
    )
    studies, studies_total = study_service.list(
        1, page_size, None if result == "all" else result, search or None, order == "positives"
    )
    pages = max(1, math.ceil(total / page_size))
    query = {"patient_id": search, "result": result, "order": order, "page_size": page_size}
    defaults = {"patient_id": "", "result": "all", "order": "newest", "page_size": 20}

    def link(number: int) -> str:
        chosen = {key: value for key, value in query.items() if value != defaults[key]}
        if number > 1:
            chosen["page"] = number
        return "/worklist" + (f"?{urlencode(chosen)}" if chosen else "")

    return render(
        request,
        "worklist.html",
        title="Worklist",
        nav="worklist",
        items=items,
        total=total,
        studies=studies,
        studies_total=studies_total,
        now={
            **{item.id: current_decision(registry, item) for item in items},
            **{item.id: current_decision(registry, item) for item in studies},
        },
        query=query,
        filtered=bool(search) or result != "all",
        page=page,
        pages=pages,
        previous_link=link(page - 1) if page > 1 else None,
        next_link=link(page + 1) if page < pages else None,
        first_link=link(1),
        page_sizes=sorted({10, 20, 50, 100, page_size}),
    )


def operating_point_view(point: OperatingPointInUse, card_point: OperatingPointInUse) -> dict[str, Any]:
    """The thresholds the model decides with, where they come from, and the card's beside them."""
    return {
        "site": point.from_site,
        "rows": [
            {
                "decision": "Slice",
                "threshold": point.slice.value,
                "source": point.slice.source,
                "card": card_point.slice.value,
            },
            {
                "decision": f"Study ({point.aggregation})",
                "threshold": point.study.value,
                "source": point.study.source,
                "card": card_point.study.value,
            },
        ],
    }


@router.get("/model", response_class=HTMLResponse)
def model_page(request: Request, user: PageUser, registry: RegistryDep) -> Response:
    """The default model's card: training data, metrics with intervals, plots, intended use and limits."""
    classifier = registry.get()
    bundle = classifier.bundle
    plots = [
        {
            "name": name,
            "title": title,
            "alt": alt,
            "available": (bundle.path / f"{name}.png").is_file(),
        }
        for name, (title, alt) in PLOTS.items()
    ]
    outliner = registry.outliner(classifier)
    segmentation = None
    if outliner is not None:
        limitations = outliner.card.get("limitations")
        segmentation = {
            "name": outliner.name,
            "version": outliner.version,
            "same_model": outliner is classifier,
            "help": help_sentences(outliner.card),
            "intended_use": outliner.card.get("intended_use"),
            "limitations": [str(item) for item in limitations] if isinstance(limitations, list) else [],
        }
    return render(
        request,
        "model.html",
        title="Model",
        nav="model",
        card=card_view(bundle.card),
        operating_point=operating_point_view(classifier.operating_point, classifier.card_operating_point),
        plots=plots,
        models=registry.describe(),
        segmentation=segmentation,
    )


@router.get("/model/plots/{plot_name}.png")
def model_plot(plot_name: str, user: PageUser, registry: RegistryDep) -> Response:
    """A plot from the default model's bundle (ROC, calibration, confusion matrix)."""
    if plot_name not in PLOTS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No plot named {plot_name!r}.")
    path = registry.get().bundle.path / f"{plot_name}.png"
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"The model has no {PLOTS[plot_name][0]} plot.")
    return Response(
        path.read_bytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
    )


def wants_html(request: Request) -> bool:
    api_paths = ("/api/", "/static/", "/docs", "/redoc", "/openapi.json", "/healthz", "/readyz")
    return not request.url.path.startswith(api_paths) and "text/html" in request.headers.get("accept", "")


def install_page_error_handler(app: FastAPI) -> None:
    """Unknown addresses opened in a browser get an HTML page; the API keeps its JSON errors."""

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if wants_html(request) and "session" in request.scope:
            messages = {404: "There is no page at this address.", 405: "This page cannot be used that way."}
            return render_error(request, exc.status_code, messages.get(exc.status_code, str(exc.detail)))
        return await http_exception_handler(request, exc)
