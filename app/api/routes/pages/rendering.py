"""Page rendering: the templates, what every page is given, and the security headers every page carries."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.api.routes.pages.filters import install_filters
from app.api.web_auth import session_principal
from app.core.config import PROJECT_ROOT, Settings
from app.core.errors import ServiceError
from app.core.labels import Label
from app.core.sessions import CSRF_FIELD, csrf_token
from app.core.wording import VERDICTS

templates = Jinja2Templates(directory=PROJECT_ROOT / "templates")
install_filters(templates.env)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; "
        "base-uri 'self'; form-action 'self'"
    ),
    "Referrer-Policy": "same-origin",
}
LABEL_TEXT = VERDICTS

AnyResponse = TypeVar("AnyResponse", bound=Response)


def add_security_headers(response: AnyResponse) -> AnyResponse:
    """Page responses may not be framed, cached or sent to other sites' referrers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def default_model(request: Request) -> dict[str, str] | None:
    """The serving model's name and version for the page header; None when none is loaded."""
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


def redirect_with_message(request: Request, target: str, message: str) -> RedirectResponse:
    """Go to ``target`` (after a form: 303), which shows ``message`` once."""
    request.session["flash"] = message
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


def render(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """A page from ``template`` with what every page needs and ``values``."""
    return templates.TemplateResponse(
        request, template, page_context(request, **values), status_code=status_code
    )
