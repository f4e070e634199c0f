"""Domain errors raised by services, how each is answered, and the API's handlers.

:func:`answer_for` is the one mapping from an error to its status, ``detail``, page heading and
headers: the API's handlers here send it as JSON, the pages (:mod:`app.api.routes.pages.errors`)
render it as HTML. A new error is a :class:`ServiceError` subclass with its ``status_code`` (and,
where the status's heading does not fit, its ``title``), declared once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.logs import route_template

logger = logging.getLogger(__name__)


class InvalidSettings(Exception):
    """Settings the service refuses to start with; the message names them and says how to fix them."""


class ServiceError(Exception):
    """Base class: ``status_code`` and a ``detail`` a person can act on.

    ``title`` is the heading of the page that shows the error (None: the status's, from
    :data:`STATUS_TITLES`); ``retry_after``, where set, is sent as the ``Retry-After`` header.
    """

    status_code = 500
    title: str | None = None
    retry_after: int | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidUpload(ServiceError):
    status_code = 400


class UploadTooLarge(ServiceError):
    status_code = 413


class UnsupportedImage(ServiceError):
    status_code = 415


class InvalidStudy(ServiceError):
    """Readable files, but no usable CT series among them."""

    status_code = 422


class NotFound(ServiceError):
    status_code = 404


class ModelUnavailable(ServiceError):
    status_code = 503


class StorageUnavailable(ServiceError):
    status_code = 503


class PacsUnavailable(ServiceError):
    """DICOMweb is not configured, or the archive did not answer."""

    status_code = 503


class PacsError(ServiceError):
    """The archive answered, but refused or failed a request."""

    status_code = 502


class AnalysisInProgress(ServiceError):
    """Another worker or replica is analysing the same series with the same model version."""

    status_code = 409

    def __init__(self, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ClaimLost(AnalysisInProgress):
    """This worker's claim on an analysis was taken over (it looked stuck); its work is dropped."""


def describe_validation(exc: RequestValidationError) -> str:
    """What was wrong with a request, in words: ``field: message`` for each error, joined by ``; ``."""
    parts = []
    for error in exc.errors():
        location = [str(item) for item in error.get("loc", ()) if item not in ("body", "query", "path")]
        field = ".".join(location) or "request"
        parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def malformed_id(exc: RequestValidationError) -> NotFound | None:
    """The 404 for a path id that is not a UUID, or None when anything else was wrong.

    Such an id names nothing, so it answers as an unknown id does (``No study with id 'x'.``)
    rather than with a 422: ``prediction_id`` and ``study_id`` are ``uuid.UUID`` path parameters.
    """
    errors = exc.errors()
    if not errors or any(error.get("type") != "uuid_parsing" for error in errors):
        return None
    location = errors[0].get("loc", ())
    if len(location) != 2 or location[0] != "path" or not str(location[1]).endswith("_id"):
        return None
    kind = str(location[1]).removesuffix("_id")
    return NotFound(f"No {kind} with id {errors[0].get('input')!r}.")


# The heading of an error page for each status; the detail says the rest.
STATUS_TITLES = {
    400: "The request could not be used",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    413: "File too large",
    415: "File not readable",
    429: "Too many uploads",
    503: "Service not ready",
}
DEFAULT_TITLE = "Something went wrong"


@dataclass(frozen=True)
class ErrorAnswer:
    """How an error is answered, in whatever form: JSON for the API, a page for a browser."""

    status_code: int
    detail: str
    # A heading of the error's own; None: the status's (see :attr:`heading`).
    title: str | None = None
    headers: Mapping[str, str] | None = None
    # Each field's error of an invalid API request (``loc``, ``msg``, ``type``).
    errors: list[dict[str, Any]] | None = None
    # The error it is answered as, for the error counts (a malformed id counts as ``NotFound``).
    counted_as: str = ""

    @property
    def heading(self) -> str:
        """The error page's heading."""
        return self.title or STATUS_TITLES.get(self.status_code, DEFAULT_TITLE)


def answer_for(exc: Exception, *, from_page: bool = False) -> ErrorAnswer | None:
    """The status, ``detail``, heading and headers that answer ``exc``; None for an error nobody
    foresaw (a bug: the server's own error answers it).

    Domain errors keep their class's status; HTTP errors keep theirs; a malformed id is an unknown
    one (404). Any other invalid request is a 422 for the API, and a 400 for a page (whose own
    form sent it).
    """
    if isinstance(exc, ServiceError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return ErrorAnswer(exc.status_code, exc.detail, exc.title, headers, counted_as=type(exc).__name__)
    if isinstance(exc, StarletteHTTPException):
        return ErrorAnswer(exc.status_code, str(exc.detail), headers=exc.headers, counted_as="HTTPException")
    if isinstance(exc, RequestValidationError):
        not_found = malformed_id(exc)
        if not_found is not None:
            return answer_for(not_found)
        if from_page:
            return ErrorAnswer(
                400,
                "The request was not understood. " + describe_validation(exc),
                counted_as="RequestValidationError",
            )
        errors = [
            {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
            for error in exc.errors()
        ]
        return ErrorAnswer(
            422,
            "Invalid request. " + describe_validation(exc),
            errors=errors,
            counted_as="RequestValidationError",
        )
    return None


def _count_error(request: Request, error_type: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_error(error_type)


def install_error_handlers(app: FastAPI) -> None:
    """Answer domain and validation errors with ``{"detail": ...}`` JSON, as :func:`answer_for` says."""

    @app.exception_handler(ServiceError)
    @app.exception_handler(RequestValidationError)
    async def handle_error(request: Request, exc: Exception) -> JSONResponse:
        answer = answer_for(exc)
        if answer is None:  # only the two types above are handled here
            raise exc
        _count_error(request, answer.counted_as)
        if answer.status_code >= 500:
            logger.error("%s on %s: %s", answer.counted_as, route_template(request.scope), answer.detail)
        content: dict[str, Any] = {"detail": answer.detail}
        if answer.errors is not None:
            content["errors"] = answer.errors
        return JSONResponse(status_code=answer.status_code, content=content, headers=answer.headers)

    document_validation_errors(app)


def document_validation_errors(app: FastAPI) -> None:
    """Make ``/openapi.json`` describe the 422 body this service sends, not FastAPI's default.

    The handler above answers ``{"detail": "<sentence>", "errors": [...]}`` (domain errors with
    status 422 send ``detail`` alone); FastAPI's generated ``HTTPValidationError`` says
    ``detail`` is the list, so clients generated from the schema, and schema-driven tests,
    would reject every 422.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in components:
            components["HTTPValidationError"] = {
                "title": "HTTPValidationError",
                "type": "object",
                "required": ["detail"],
                "properties": {
                    "detail": {
                        "title": "Detail",
                        "type": "string",
                        "description": "What was wrong, in words.",
                    },
                    "errors": {
                        "title": "Errors",
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/ValidationError"},
                    },
                },
            }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
