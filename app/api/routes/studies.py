"""Whole studies: analyse a CT series (uploaded files or a ZIP) as a job, read it, its files and its report."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import (
    CurrentUser,
    SegmentWanted,
    SettingsDep,
    StudyJobsDep,
    StudyServiceDep,
    UploadUser,
)
from app.api.files import API_MAX_AGE_SECONDS, stored_file_response
from app.api.routes.predictions import segmentation_schema
from app.core.errors import InvalidUpload, NotFound, UploadTooLarge
from app.core.labels import StudyLabel
from app.db import Study
from app.schemas import (
    Abc2Out,
    DicomwebRequest,
    JobProgress,
    ModelRef,
    SkippedOut,
    StoredObject,
    StudyCriteriaOut,
    StudyFields,
    StudyJobLinks,
    StudyJobOut,
    StudyLinks,
    StudyOut,
    StudyPage,
    StudySegmentationOut,
    StudySliceLinks,
    StudySliceOut,
    StudySubtypeOut,
    StudySummary,
    UploadForm,
)
from app.services.analysis import UploadFields
from app.services.details import SliceSegmentationRecord, StudySegmentationRecord
from app.services.jobs import MAX_WAIT_SECONDS
from app.services.jobs.attempts import DONE, FAILED
from app.services.segmentation import colour_hex, study_slice_record
from app.services.storage import STUDIES
from app.services.studies import StudyService
from app.services.study_record import StudyRecord, slice_file

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])

STUDY_UPLOAD_PATH = "/api/v1/studies"
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6})(?:$|[,;\s])", re.IGNORECASE)

WaitQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=1_000_000,
        description=f"Wait up to this many seconds (at most {MAX_WAIT_SECONDS}) for the analysis to end.",
    ),
]
PreferHeader = Annotated[
    str | None,
    Header(description="'wait=N': as the wait parameter (RFC 7240), when that is not given."),
]
JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": StudyJobOut, "description": "Queued or running: how far the analysis is."},
}


def wait_seconds(wait: int | None, prefer: str | None) -> int:
    """How long a request asks to wait for its study's job (``?wait=N``, else ``Prefer: wait=N``), capped."""
    if wait is None and prefer:
        found = PREFER_WAIT.search(prefer)
        wait = int(found.group(1)) if found else None
    return min(wait or 0, MAX_WAIT_SECONDS)


def file_type(name: str) -> str:
    return "application/pdf" if name.endswith(".pdf") else "image/png"


def _links(study: Study, request: Request) -> StudyLinks:
    base = str(request.url_for("read_study", study_id=study.id).path)
    return StudyLinks(self=base, report=f"{base}/report.pdf", page=f"/studies/{study.id}")


def to_job(study: Study, request: Request) -> StudyJobOut:
    """The API form of a study as a job: its status, its progress and why it failed."""
    return StudyJobOut(
        id=study.id,
        created_at=study.created_at,
        status=study.status,
        progress=JobProgress(done=study.progress_done, total=study.progress_total),
        failure=study.failure if study.status == FAILED else None,
        links=StudyJobLinks(self=_links(study, request).self, page=f"/studies/{study.id}"),
    )


def job_answer(
    study: Study, request: Request, service: StudyService, finished_status: int, report_failure: bool = True
) -> Response:
    """A study as a request that waited for it sees it: the result with ``finished_status`` once done,
    the error the analysis ended in once failed (with ``report_failure``, also the error that kept a
    done study's results from the PACS), else ``202`` with the job and its ``Location``."""
    failed = study.status == FAILED or (report_failure and study.failure_status is not None)
    if failed:
        return JSONResponse({"detail": study.failure}, status_code=study.failure_status or 500)
    if study.status == DONE:
        result = to_schema(service.with_slices(study), request)
        return JSONResponse(result.model_dump(mode="json"), status_code=finished_status)
    job = to_job(study, request)
    return JSONResponse(
        job.model_dump(mode="json"),
        status_code=status.HTTP_202_ACCEPTED,
        headers={"Location": job.links.self},
    )


def _summary_fields(study: Study, request: Request) -> dict[str, Any]:
    """What a study's summary says, and its full form too."""
    return {
        "id": study.id,
        "created_at": study.created_at,
        "probability": study.probability,
        "label": study.label,
        "threshold": study.threshold,
        "operating_point": study.operating_point,
        "aggregation": study.aggregation,
        "num_slices": study.num_slices,
        "source": study.source,
        "model": ModelRef(name=study.model_name, version=study.model_version),
        "study": StudyFields.model_validate(study, from_attributes=True),
        "links": _links(study, request),
    }


def to_summary(study: Study, request: Request) -> StudySummary:
    return StudySummary(**_summary_fields(study, request))


def study_segmentation_schema(stored: StudySegmentationRecord | None) -> StudySegmentationOut | None:
    """The API form of a study's stored segmentation summary; None when there is none."""
    if stored is None or stored.model is None:
        return None
    abc2 = stored.abc2
    return StudySegmentationOut(
        model=ModelRef(name=stored.model.name, version=stored.model.version),
        volume_ml=stored.volume_ml,
        volume_unavailable_reason=stored.volume_unavailable_reason,
        abc2=Abc2Out(volume_ml=abc2.volume_ml, a_mm=abc2.a_mm, b_mm=abc2.b_mm, c_mm=abc2.c_mm)
        if abc2
        else None,
        pixel_spacing_mm=stored.pixel_spacing_mm,
        slice_spacing_mm=stored.slice_spacing_mm,
        slice_spacing_source=stored.slice_spacing_source,
        blood_area_px=stored.blood_area_px,
        subtypes={
            name: StudySubtypeOut(
                probability=values.probability,
                area_px=values.area_px,
                volume_ml=values.volume_ml,
                colour=colour_hex(name),
            )
            for name, values in stored.subtypes.items()
        },
    )


def slice_segmentation(stored: dict[str, Any] | None, index: int) -> SliceSegmentationRecord | None:
    """One study slice's outlines in the form of a slice prediction's; None when it has none."""
    record = study_slice_record(stored, index) if stored is not None else None
    return SliceSegmentationRecord.model_validate(record) if record is not None else None


def to_schema(record: StudyRecord, request: Request) -> StudyOut:
    """The API form of a stored study and its slices."""
    study = record.study
    details = record.details
    summary = _summary_fields(study, request)
    links: StudyLinks = summary["links"]
    key_slices = record.key_slices
    stored = details.segmentation.model_dump(mode="json") if details.segmentation is not None else None
    return StudyOut(
        **summary,
        criteria=StudyCriteriaOut.model_validate(details.criteria.model_dump())
        if details.criteria is not None
        else None,
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=study.series_instance_uid,
        ordering=details.ordering,
        key_slices=key_slices,
        slices=[
            StudySliceOut(
                index=item.slice_index,
                sop_instance_uid=item.sop_instance_uid,
                position_mm=item.position_mm,
                probability=item.probability,
                key=item.slice_index in key_slices,
                links=StudySliceLinks(
                    image=f"{links.self}/{slice_file('slice', item.slice_index)}",
                    overlay=f"{links.self}/{slice_file('overlay', item.slice_index)}",
                ),
                segmentation=segmentation_schema(
                    slice_segmentation(stored, item.slice_index),
                    f"{links.self}/{slice_file('mask', item.slice_index)}",
                    f"{links.self}/{slice_file('contours', item.slice_index)}",
                ),
            )
            for item in record.slices
        ],
        skipped=[SkippedOut(name=item.name, reason=item.reason) for item in details.skipped],
        stored_in_pacs=[
            StoredObject(
                kind=item.kind,
                series_instance_uid=item.series_instance_uid,
                sop_instance_uids=item.sop_instance_uids,
            )
            for item in details.stored_in_pacs
        ],
        timings_ms=study.timings_ms or {},
        segmentation=study_segmentation_schema(details.segmentation),
    )


async def read_uploads(uploads: list[UploadFile], limit: int) -> list[tuple[str, bytes]]:
    """Read every uploaded file, refusing the lot as soon as together they pass ``limit`` bytes."""
    files = []
    total = 0
    for index, upload in enumerate(uploads):
        chunks = []
        while chunk := await upload.read(1024 * 1024):
            total += len(chunk)
            if total > limit:
                raise UploadTooLarge(
                    f"The files are larger than the study upload limit of {limit / 1024 / 1024:.0f} MiB."
                )
            chunks.append(chunk)
        files.append((upload.filename or f"file-{index + 1}", b"".join(chunks)))
    if not any(data for _, data in files):
        raise InvalidUpload("The files are empty. Send the DICOM files of one CT series, or one ZIP of them.")
    return files


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyOut,
    responses={
        **JOB_RESPONSES,
        201: {"model": StudyOut, "description": "Asked to wait, and the analysis finished in time."},
    },
)
async def create_study(
    request: Request,
    user: UploadUser,
    service: StudyServiceDep,
    jobs: StudyJobsDep,
    settings: SettingsDep,
    segment: SegmentWanted,
    files: Annotated[
        list[UploadFile],
        File(description="The DICOM files of one CT series (repeat the field), or one ZIP of them."),
    ],
    form: Annotated[UploadForm, Form()],
    model: Annotated[str | None, Query(description="Model name; default model when omitted.")] = None,
    model_version: Annotated[str | None, Query(description="Model version; newest when omitted.")] = None,
    wait: WaitQuery = None,
    prefer: PreferHeader = None,
) -> Response:
    """Analyse a whole CT series as a job: per-slice probabilities and outlines, a study decision, volumes and a report."""
    uploads = await read_uploads(files, settings.max_study_upload_bytes)
    fields = UploadFields.from_form(**form.model_dump())
    study = await run_in_threadpool(jobs.enqueue_upload, uploads, fields, model, model_version, segment)
    seconds = wait_seconds(wait, prefer)
    if seconds:
        study = await run_in_threadpool(jobs.wait, study.id, seconds)
    return job_answer(study, request, service, status.HTTP_201_CREATED)


@router.post(
    "/dicomweb",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyOut,
    responses={
        **JOB_RESPONSES,
        200: {
            "model": StudyOut,
            "description": "Analysed before with this model version: the stored analysis.",
        },
        201: {"model": StudyOut, "description": "Asked to wait, and the analysis finished in time."},
        409: {"description": "Another worker is analysing this series with this model version; ask again."},
    },
)
def create_study_from_pacs(
    request: Request,
    body: DicomwebRequest,
    user: CurrentUser,
    service: StudyServiceDep,
    jobs: StudyJobsDep,
    wait: WaitQuery = None,
    prefer: PreferHeader = None,
) -> Response:
    """Analyse a study of the PACS by StudyInstanceUID as a job and store the results back in it (DICOMweb)."""
    queued = jobs.enqueue_dicomweb(body.study_instance_uid, body.model, body.model_version)
    if isinstance(queued, StudyRecord):
        return JSONResponse(
            to_schema(queued, request).model_dump(mode="json"), status_code=status.HTTP_200_OK
        )
    seconds = wait_seconds(wait, prefer)
    study = jobs.wait(queued.id, seconds) if seconds else queued
    return job_answer(study, request, service, status.HTTP_201_CREATED)


@router.get("", response_model=StudyPage)
def list_studies(
    request: Request,
    user: CurrentUser,
    service: StudyServiceDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 20,
    label: Annotated[StudyLabel | None, Query()] = None,
    patient_id: Annotated[str | None, Query(max_length=100)] = None,
    positives_first: bool = False,
) -> StudyPage:
    """Stored study analyses, newest first (optionally haemorrhage-positive first)."""
    items, total = service.list(page, page_size, label, patient_id, positives_first)
    return StudyPage(
        items=[to_summary(item, request) for item in items], total=total, page=page, page_size=page_size
    )


@router.get("/{study_id}", response_model=StudyOut | StudyJobOut, responses=JOB_RESPONSES)
def read_study(
    study_id: uuid.UUID,
    request: Request,
    user: CurrentUser,
    service: StudyServiceDep,
    jobs: StudyJobsDep,
    wait: WaitQuery = None,
    prefer: PreferHeader = None,
) -> Response:
    """One study analysis with its per-slice results; while it runs, its status and progress (202)."""
    seconds = wait_seconds(wait, prefer)
    study = jobs.wait(str(study_id), seconds) if seconds else service.records.get(str(study_id))
    if study.status == FAILED:
        return JSONResponse(to_job(study, request).model_dump(mode="json"))
    return job_answer(study, request, service, status.HTTP_200_OK, report_failure=False)


@router.get(
    "/{study_id}/{file_name}",
    responses={200: {"content": {"image/png": {}, "application/pdf": {}}}},
    response_class=Response,
)
def read_study_file(
    study_id: uuid.UUID, file_name: str, user: CurrentUser, service: StudyServiceDep
) -> Response:
    """A file of a study: report.pdf, slice_NNN.png, overlay_NNN.png, mask_NNN.png or contours_NNN.png (NNN from 000)."""
    if not STUDIES.allows(file_name):
        raise NotFound(
            f"No file {file_name!r}; available: report.pdf, slice_NNN.png, overlay_NNN.png, mask_NNN.png, "
            "contours_NNN.png."
        )
    identifier = str(study_id)
    data = service.read_file(identifier, file_name)
    attachment = f"ich-study-report-{identifier}.pdf" if file_name.endswith(".pdf") else None
    return stored_file_response(data, file_type(file_name), API_MAX_AGE_SECONDS, attachment)


@router.delete("/{study_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_study(study_id: uuid.UUID, user: CurrentUser, service: StudyServiceDep) -> Response:
    """Delete a study analysis and its files (nothing stored in the PACS is touched)."""
    service.delete(str(study_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
