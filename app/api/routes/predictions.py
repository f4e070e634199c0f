"""Slice predictions: create, list, read, files, delete."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from app.api.deps import CurrentUser, PredictionServiceDep, SegmentWanted, SettingsDep, UploadUser
from app.api.files import API_MAX_AGE_SECONDS, stored_file_response
from app.core.errors import NotFound, UploadTooLarge
from app.core.labels import Label
from app.db import Prediction
from app.schemas import (
    ImageInfo,
    ModelRef,
    PredictionLinks,
    PredictionOut,
    PredictionPage,
    ScopeOut,
    SegmentationLinks,
    SegmentationOut,
    StudyFields,
    SubtypeOut,
    UploadForm,
)
from app.services.analysis import UploadFields
from app.services.details import SliceSegmentationRecord
from app.services.predictions import prediction_details, prediction_scope
from app.services.segmentation import CONTOURS_FILE, MASK_FILE, colour_hex

router = APIRouter(prefix="/api/v1/predictions", tags=["predictions"])

FILE_TYPES = {
    "original.png": "image/png",
    "overlay.png": "image/png",
    "heatmap.png": "image/png",
    MASK_FILE: "image/png",
    CONTOURS_FILE: "image/png",
    "report.pdf": "application/pdf",
}


def segmentation_schema(
    record: SliceSegmentationRecord | None, mask: str, contours: str
) -> SegmentationOut | None:
    """The API form of a stored slice segmentation; None when there is none."""
    if record is None:
        return None
    return SegmentationOut(
        model=ModelRef(name=record.model.name, version=record.model.version),
        subtypes={
            name: SubtypeOut(
                probability=values.probability,
                area_px=values.area_px,
                area_mm2=values.area_mm2,
                colour=colour_hex(name),
            )
            for name, values in record.subtypes.items()
        },
        blood_area_px=record.blood_area_px,
        blood_area_mm2=record.blood_area_mm2,
        links=SegmentationLinks(mask=mask, contours=contours),
    )


def to_schema(prediction: Prediction, request: Request) -> PredictionOut:
    """The API form of a stored prediction, its details read once."""
    base = str(request.url_for("read_prediction", prediction_id=prediction.id).path)
    details = prediction_details(prediction)
    in_scope, reasons = prediction_scope(prediction, details)
    segmentation = segmentation_schema(details.segmentation, f"{base}/{MASK_FILE}", f"{base}/{CONTOURS_FILE}")
    return PredictionOut(
        id=prediction.id,
        created_at=prediction.created_at,
        probability=prediction.probability,
        label=prediction.label,
        threshold=prediction.threshold,
        operating_point=prediction.operating_point,
        scope=ScopeOut(in_scope=in_scope, reasons=reasons),
        model=ModelRef(name=prediction.model_name, version=prediction.model_version),
        image=ImageInfo(
            format=prediction.source_format,
            width=prediction.image_width,
            height=prediction.image_height,
        ),
        study=StudyFields.model_validate(prediction, from_attributes=True),
        timings_ms=prediction.timings_ms or {},
        links=PredictionLinks(
            self=base,
            original=f"{base}/original.png",
            overlay=f"{base}/overlay.png",
            heatmap=f"{base}/heatmap.png",
            report=f"{base}/report.pdf",
            mask=segmentation.links.mask if segmentation else None,
            contours=segmentation.links.contours if segmentation else None,
        ),
        segmentation=segmentation,
    )


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """Read an upload, refusing it as soon as it passes ``limit`` bytes."""
    chunks = []
    size = 0
    while chunk := await upload.read(1024 * 1024):
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge(f"The file is larger than the limit of {limit / 1024 / 1024:.0f} MiB.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PredictionOut,
    responses={429: {"description": "Too many uploads from this API key or address; see Retry-After."}},
)
async def create_prediction(
    request: Request,
    user: UploadUser,
    service: PredictionServiceDep,
    settings: SettingsDep,
    segment: SegmentWanted,
    file: Annotated[
        UploadFile, File(description="One CT slice: PNG, JPEG or DICOM (detected from content).")
    ],
    form: Annotated[UploadForm, Form()],
    model: Annotated[str | None, Query(description="Model name; default model when omitted.")] = None,
    model_version: Annotated[str | None, Query(description="Model version; newest when omitted.")] = None,
) -> PredictionOut:
    """Analyse one CT slice: haemorrhage probability, Grad-CAM heat map, outlines by subtype and a PDF report."""
    data = await read_limited(file, settings.max_upload_bytes)
    fields = UploadFields.from_form(**form.model_dump())
    prediction = await run_in_threadpool(service.create, data, fields, model, model_version, segment)
    return to_schema(prediction, request)


@router.get("", response_model=PredictionPage)
def list_predictions(
    request: Request,
    user: CurrentUser,
    service: PredictionServiceDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 20,
    # A Literal of the members rather than Label: a wrong value is a literal_error, as for studies.
    label: Annotated[
        Literal[Label.HEMORRHAGE, Label.NO_HEMORRHAGE, Label.OUT_OF_SCOPE] | None, Query()
    ] = None,
    patient_id: Annotated[str | None, Query(max_length=100)] = None,
    positives_first: bool = False,
) -> PredictionPage:
    """Stored predictions, newest first (optionally haemorrhage-positive first)."""
    items, total = service.list(page, page_size, label, patient_id, positives_first)
    return PredictionPage(
        items=[to_schema(item, request) for item in items], total=total, page=page, page_size=page_size
    )


@router.get("/{prediction_id}", response_model=PredictionOut)
def read_prediction(
    prediction_id: uuid.UUID, request: Request, user: CurrentUser, service: PredictionServiceDep
) -> PredictionOut:
    """One prediction."""
    return to_schema(service.get(str(prediction_id)), request)


@router.get(
    "/{prediction_id}/{file_name}",
    responses={200: {"content": {"image/png": {}, "application/pdf": {}}}},
    response_class=Response,
)
def read_prediction_file(
    prediction_id: uuid.UUID, file_name: str, user: CurrentUser, service: PredictionServiceDep
) -> Response:
    """A file of a prediction: original.png, overlay.png, heatmap.png, mask.png, contours.png or report.pdf."""
    if file_name not in FILE_TYPES:
        raise NotFound(f"No file {file_name!r}; available: {', '.join(FILE_TYPES)}.")
    data = service.read_file(str(prediction_id), file_name)
    attachment = f"ich-report-{prediction_id}.pdf" if file_name.endswith(".pdf") else None
    return stored_file_response(data, FILE_TYPES[file_name], API_MAX_AGE_SECONDS, attachment)


@router.delete("/{prediction_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_prediction(prediction_id: uuid.UUID, user: CurrentUser, service: PredictionServiceDep) -> Response:
    """Delete a prediction and its files."""
    service.delete(str(prediction_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
