"""Errors on pages: every failure renders as an HTML page, never a trace.

The domain errors of :mod:`app.core.errors` keep their status and ``detail``; only the form
changes (a page instead of JSON). Unknown addresses opened in a browser get a page too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.routes.pages.rendering import add_security_headers, page_context, templates
from app.api.web_auth import CSRF_MESSAGE, SignInRequired, signin_url
from app.core.errors import ErrorAnswer, answer_for

logger = logging.getLogger(__name__)

__all__ = [
    "CSRF_MESSAGE",
    "PageRoute",
    "install_page_error_handler",
    "page_error",
    "page_router",
    "render_error",
    "wants_html",
]

SERVER_ERROR_MESSAGE = (
    "Something went wrong on the server and the page could not be shown. Nothing you did caused it; "
    "try again in a moment, and tell the administrator if it keeps happening (the error was logged)."
)


def render_error(
    request: Request,
    status_code: int,
    message: str,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """The error page: a title (by default the status's), the message a person can act on."""
    response = templates.TemplateResponse(
        request,
        "error.html",
        page_context(
            request,
            title=title or ErrorAnswer(status_code, message).heading,
            message=message,
            status_code=status_code,
        ),
        status_code=status_code,
        headers=headers,
    )
    return add_security_headers(response)


def page_error(exc: Exception) -> tuple[int, str, str | None] | None:
    """The status, message and title (None: the status's) of the page that shows ``exc``; None
    for an error nobody foresaw. The API answers the same errors with the same status and
    ``detail`` (:func:`app.core.errors.answer_for`), except an invalid request, a 400 here since the
    page's own form sent it.
    """
    answer = answer_for(exc, from_page=True)
    return None if answer is None else (answer.status_code, answer.detail, answer.title)


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
                answer = answer_for(exc, from_page=True)
                if answer is None:
                    # The trace goes to the log; the browser gets a page, never the trace.
                    logger.exception("Unexpected error on page %s", self.path)
                    answer = ErrorAnswer(status.HTTP_500_INTERNAL_SERVER_ERROR, SERVER_ERROR_MESSAGE)
                response = render_error(
                    request, answer.status_code, answer.detail, answer.title, answer.headers
                )
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
            message = messages.get(exc.status_code, str(exc.detail))
            return render_error(request, exc.status_code, message, headers=exc.headers)
        return await http_exception_handler(request, exc)
