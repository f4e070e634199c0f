"""The upload page: one CT slice, or the files of one CT series."""

from __future__ import annotations

from typing import Annotated

from fastapi import File, Form, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import PredictionServiceDep, SettingsDep, StudyJobsDep, limit_upload
from app.api.routes.pages.errors import page_router
from app.api.routes.pages.rendering import render
from app.api.routes.predictions import read_limited
from app.api.routes.studies import read_uploads
from app.api.web_auth import CsrfField, PageUser, check_csrf
from app.core.config import Settings
from app.core.errors import InvalidUpload, ServiceError
from app.schemas import UploadForm
from app.services.predictions import UploadFields

router = page_router()

STUDY_UPLOAD_PAGE = "/studies/upload"


def upload_values(**fields: str | None) -> dict[str, str]:
    """The form's fields as the form shows them again (empty for none)."""
    return {name: value or "" for name, value in fields.items()}


def upload_form(
    request: Request,
    settings: Settings,
    status_code: int = 200,
    fields: dict[str, str] | None = None,
    **values: str,
) -> HTMLResponse:
    """The upload page with its size limits, the fields as entered and any error message."""
    return render(
        request,
        "upload.html",
        status_code,
        title="Analyse a CT slice",
        nav="upload",
        fields=fields or upload_values(),
        max_bytes=settings.max_upload_bytes,
        max_mib=settings.max_upload_mb,
        study_max_bytes=settings.max_study_upload_bytes,
        study_max_mib=settings.max_study_upload_mb,
        **values,
    )


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, user: PageUser, settings: SettingsDep) -> Response:
    """The upload form: drop or choose a CT slice, with optional patient and study fields."""
    return upload_form(request, settings)


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
        return upload_form(request, settings, exc.status_code, values, error=prefix + exc.detail)
    return RedirectResponse(f"/predictions/{prediction.id}", status.HTTP_303_SEE_OTHER)


@router.post(STUDY_UPLOAD_PAGE, response_class=HTMLResponse)
async def upload_study(
    request: Request,
    user: PageUser,
    jobs: StudyJobsDep,
    settings: SettingsDep,
    csrf: CsrfField = "",
    files: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    """Queue the analysis of an uploaded CT series (several DICOM files or a ZIP), then show the study."""
    check_csrf(request, csrf)
    chosen = [item for item in files or [] if item.filename or item.size]
    try:
        limit_upload(request, user)
        if not chosen:
            raise InvalidUpload("Choose the DICOM files of one CT series, or one ZIP of them.")
        uploads = await read_uploads(chosen, settings.max_study_upload_bytes)
        study = await run_in_threadpool(jobs.enqueue_upload, uploads, UploadFields())
    except ServiceError as exc:
        message = "The series could not be analysed. " + exc.detail
        return upload_form(request, settings, exc.status_code, study_error=message)
    return RedirectResponse(f"/studies/{study.id}", status.HTTP_303_SEE_OTHER)
