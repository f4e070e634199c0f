"""Errors on pages: every failure renders as an HTML page, never a trace.

The domain errors of :mod:`app.core.errors` keep their status and ``detail``; only the form
changes (a page instead of JSON). Unknown addresses opened in a browser get a page too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.routes.pages.rendering import add_security_headers, page_context, templates
from app.api.web_auth import CsrfRejected, SignInRequired, signin_url
from app.core.errors import ServiceError, describe_validation, malformed_id

logger = logging.getLogger(__name__)

SERVER_ERROR_MESSAGE = (
    "Something went wrong on the server and the page could not be shown. Nothing you did caused it; "
    "try again in a moment, and tell the administrator if it keeps happening (the error was logged)."
)
CSRF_MESSAGE = (
    "This form has expired or did not come from this site, so it was not accepted. "
    "Reload the page and try again (cookies must be allowed for this site)."
)


def render_error(request: Request, status_code: int, message: str, title: str | None = None) -> HTMLResponse:
    """The error page: a title for the status, the message a person can act on."""
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


def page_error(exc: Exception) -> tuple[int, str, str | None] | None:
    """The status, message and title (None: the status's) of the page that shows ``exc``; None
    for an error nobody foresaw.

    Domain errors (:class:`app.core.errors.ServiceError`) and HTTP errors keep their status and
    ``detail``, as the API answers them; a malformed id is an unknown one (404); other invalid
    requests are a 400, since the page's own form sent them.
    """
    if isinstance(exc, CsrfRejected):
        return status.HTTP_403_FORBIDDEN, CSRF_MESSAGE, "Form not accepted"
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.detail, None
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail), None
    if isinstance(exc, RequestValidationError):
        not_found = malformed_id(exc)
        if not_found is not None:
            return not_found.status_code, not_found.detail, None
        return (
            status.HTTP_400_BAD_REQUEST,
            "The request was not understood. " + describe_validation(exc),
            None,
        )
    return None


class PageRoute(APIRoute):
    """A page route: errors render as HTML pages, and every response carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await original(request)
            except SignInRequired:
                response = RedirectResponse(signin_url(request), status.HTTP_303_SEE_OTHER)
            except Exception as exc:
                shown = page_error(exc)
                if shown is None:
                    # The trace goes to the log; the browser gets a page, never the trace.
                    logger.exception("Unexpected error on page %s", self.path)
                    shown = (status.HTTP_500_INTERNAL_SERVER_ERROR, SERVER_ERROR_MESSAGE, None)
                response = render_error(request, *shown)
            return add_security_headers(response)

        return handle


def page_router() -> APIRouter:
    """A router for one resource's pages: hidden from the API schema, errors shown as pages."""
    return APIRouter(tags=["pages"], route_class=PageRoute, include_in_schema=False)


def wants_html(request: Request) -> bool:
    """Whether a browser asked for a page (not the API, static files or the API's documents)."""
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
