"""Sign-in and sign-out pages: an API key opens a browser session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import KeyStoreDep, SettingsDep
from app.api.routes.pages.errors import page_router
from app.api.routes.pages.rendering import redirect_with_message, render
from app.api.web_auth import HOME, CsrfField, check_csrf, safe_next, session_principal
from app.core.sessions import end_session, start_signed_in_session
from app.services.auth import hash_key

router = page_router()


@router.get("/")
def home() -> RedirectResponse:
    """The upload page."""
    return RedirectResponse(HOME, status.HTTP_303_SEE_OTHER)


@router.get("/signin", response_class=HTMLResponse)
def signin_page(request: Request, settings: SettingsDep, next: str = "") -> Response:
    """The sign-in form (an API key opens a browser session)."""
    if not settings.auth_enabled or session_principal(request) is not None:
        return RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    return render(request, "signin.html", title="Sign in", next=safe_next(next))


@router.post("/signin", response_class=HTMLResponse)
def sign_in(
    request: Request,
    settings: SettingsDep,
    keys: KeyStoreDep,
    csrf: CsrfField = "",
    api_key: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Check an API key and start a signed-in session."""
    check_csrf(request, csrf)
    target = safe_next(next)
    if not settings.auth_enabled:
        return RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    key = api_key.strip()
    principal = keys.authenticate(key) if key else None
    if principal is None:
        message = (
            "That API key is not valid or has been revoked. Check it and try again."
            if key
            else "Enter your API key to sign in."
        )
        code = status.HTTP_403_FORBIDDEN if key else status.HTTP_400_BAD_REQUEST
        return render(request, "signin.html", code, title="Sign in", next=target, error=message)
    start_signed_in_session(request.session, hash_key(key), principal.prefix, principal.name)
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


@router.post("/signout")
def sign_out(request: Request, settings: SettingsDep, csrf: CsrfField = "") -> RedirectResponse:
    """End the browser session."""
    check_csrf(request, csrf)
    end_session(request.session)
    return redirect_with_message(
        request, "/signin" if settings.auth_enabled else HOME, "You have signed out."
    )
