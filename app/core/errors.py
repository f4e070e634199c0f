"""Domain errors raised by services, and the handlers that turn them into JSON responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.core.logs import route_template

logger = logging.getLogger(__name__)


class InvalidSettings(Exception):
    """Settings the service refuses to start with; the message names them and says how to fix them."""


class ServiceError(Exception):
    """Base class: ``status_code`` and a ``detail`` a person can act on."""

    status_code = 500

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


def _count_error(request: Request, error_type: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_error(error_type)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain and validation errors to ``{"detail": ...}`` JSON responses."""

    @app.exception_handler(ServiceError)
    async def handle_service_error(request: Request, exc: ServiceError) -> JSONResponse:
        _count_error(request, type(exc).__name__)
        if exc.status_code >= 500:
            logger.error("%s on %s: %s", type(exc).__name__, route_template(request.scope), exc.detail)
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        not_found = malformed_id(exc)
        if not_found is not None:
            return await handle_service_error(request, not_found)
        _count_error(request, "RequestValidationError")
        errors = [
            {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
            for error in exc.errors()
        ]
        return JSONResponse(
            status_code=422,
            content={"detail": "Invalid request. " + describe_validation(exc), "errors": errors},
        )

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
