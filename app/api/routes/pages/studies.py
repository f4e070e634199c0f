"""Study pages: the decision, the slice scroller, the study's files, deletion."""

from __future__ import annotations

import uuid

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import RegistryDep, StudyServiceDep
from app.api.files import PAGE_MAX_AGE_SECONDS, stored_file_response
from app.api.routes.pages.errors import page_router
from app.api.routes.pages.rendering import redirect_with_message, render
from app.api.routes.pages.views import outline_card, study_segmentation_view, study_view
from app.api.routes.studies import file_type, to_job
from app.api.web_auth import CsrfField, PageUser, check_csrf
from app.schemas import StudyJobOut
from app.services.jobs.attempts import DONE
from app.services.storage import STUDIES
from app.services.study_record import decision_rule

router = page_router()


@router.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(
    study_id: uuid.UUID, request: Request, user: PageUser, service: StudyServiceDep, registry: RegistryDep
) -> Response:
    """One study: the decision, a slice scroller with the overlay on each slice, the chart and the volumes;
    while it is analysed, how far it is; when it failed, why."""
    study = service.records.get(str(study_id))
    if study.status != DONE:
        return render(
            request, "study_job.html", title="Study analysis", study=study, job=to_job(study, request)
        )
    record = service.with_slices(study)
    stored = record.details.segmentation
    segmentation = study_segmentation_view(stored, outline_card(registry, stored.model if stored else None))
    return render(
        request,
        "study.html",
        title="Study result",
        study=record.study,
        view=study_view(record),
        segmentation=segmentation,
        decision_rule=decision_rule(registry, record),
        criteria=record.criteria_sentence,
    )


@router.get("/studies/{study_id}/job", response_model=StudyJobOut)
def study_job(study_id: uuid.UUID, request: Request, user: PageUser, service: StudyServiceDep) -> StudyJobOut:
    """How far the analysis of a study is, for the study page to follow (JSON)."""
    return to_job(service.records.get(str(study_id)), request)


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
    attachment = f"ich-study-report-{identifier}.pdf" if file_name.endswith(".pdf") else None
    return stored_file_response(data, file_type(file_name), PAGE_MAX_AGE_SECONDS, attachment)


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
    return redirect_with_message(request, "/worklist", "The study analysis and its images were deleted.")
