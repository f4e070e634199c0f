"""Who is signed in to the web pages, and the CSRF check on their forms.

The signed cookie and the tokens themselves are in ``app.core.sessions``; this module turns them
into what the page routes depend on: the signed-in user, the sign-in redirect and the form check.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Form, Request

from app.core.config import Settings
from app.core.errors import ServiceError
from app.core.sessions import CSRF_FIELD, csrf_valid, end_session
from app.services.auth import Principal

HOME = "/upload"


class SignInRequired(Exception):
    """The page needs a signed-in browser session."""


CSRF_MESSAGE = (
    "This form has expired or did not come from this site, so it was not accepted. "
    "Reload the page and try again (cookies must be allowed for this site)."
)


class CsrfRejected(ServiceError):
    """A form arrived without its session's CSRF token."""

    status_code = 403
    title = "Form not accepted"

    def __init__(self, detail: str = CSRF_MESSAGE) -> None:
        super().__init__(detail)


def safe_next(target: str | None) -> str:
    """A local path to go to after sign-in; anything else (another site) becomes the home page."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return HOME
    if target.startswith("/signin") or any(ord(character) < 32 for character in target):
        return HOME
    return target


def signin_url(request: Request) -> str:
    """The sign-in address, with the page asked for (a GET) to return to afterwards."""
    if request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if target not in ("/", HOME):
            return "/signin?" + urlencode({"next": target})
    return "/signin"


def session_principal(request: Request) -> Principal | None:
    """The signed-in caller of this browser session, checked against the key store on every request."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    state = request.app.state
    settings: Settings = state.settings
    if not settings.auth_enabled:
        principal: Principal | None = Principal(name="anonymous", prefix="")
    else:
        session = request.session
        digest, prefix = session.get("key_digest"), session.get("key_prefix")
        signed_in_at = session.get("signed_in_at")
        if not isinstance(digest, str) or not isinstance(prefix, str) or not isinstance(signed_in_at, int):
            return None
        expired = time.time() - signed_in_at > settings.session_hours * 3600
        principal = None if expired else state.keys.authenticate_digest(digest, prefix)
        if principal is None:
            end_session(session)
            session["flash"] = "Your sign-in has ended (it expired or the key was revoked). Sign in again."
            return None
    request.state.principal = principal
    return principal


def require_page_user(request: Request) -> Principal:
    """The signed-in caller; without one, the page redirects to sign-in."""
    principal = session_principal(request)
    if principal is None:
        raise SignInRequired
    return principal


PageUser = Annotated[Principal, Depends(require_page_user)]
CsrfField = Annotated[str, Form(alias=CSRF_FIELD)]


def check_csrf(request: Request, submitted: str) -> None:
    """Reject a form whose CSRF token is not its session's."""
    if not csrf_valid(request.session, submitted):
        raise CsrfRejected
