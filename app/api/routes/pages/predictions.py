"""Result pages of one slice: the outlines, the heat map, downloads, deletion."""

from __future__ import annotations

import uuid

from fastapi import HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import PredictionServiceDep, RegistryDep
from app.api.files import PAGE_MAX_AGE_SECONDS, stored_file_response
from app.api.routes.pages.errors import page_router
from app.api.routes.pages.rendering import redirect_with_message, render
from app.api.routes.pages.views import outline_card, result_view, segmentation_view
from app.api.routes.predictions import FILE_TYPES
from app.api.web_auth import CsrfField, PageUser, check_csrf
from app.services.predictions import prediction_details
from app.services.segmentation import CONTOURS_FILE

router = page_router()


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
    details = prediction_details(prediction)
    view = result_view(prediction, details)
    stored = details.segmentation
    segmentation = None
    if view["in_scope"]:
        segmentation = segmentation_view(
            stored,
            outline_card(registry, stored.model if stored else None),
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
    attachment = None
    if download or file_name.endswith(".pdf"):
        stem, suffix = file_name.rsplit(".", 1)
        kind = "report" if suffix == "pdf" else stem
        attachment = f"ich-{kind}-{identifier}.{suffix}"
    return stored_file_response(data, FILE_TYPES[file_name], PAGE_MAX_AGE_SECONDS, attachment)


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
    return redirect_with_message(request, "/worklist", "The analysis and its images were deleted.")
