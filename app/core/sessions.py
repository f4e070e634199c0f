"""Browser sessions for the web pages: a signed cookie and per-session CSRF tokens.

The cookie holds a small JSON object, a timestamp and an HMAC-SHA256 signature; it is readable
by whoever holds it but cannot be changed without the secret, so it never carries an API key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings

logger = logging.getLogger(__name__)

SESSION_COOKIE = "ich_session"
SECRET_FILE = "session_secret"
CSRF_FIELD = "csrf_token"


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Turns a session dict into a signed, timestamped token and back."""

    def __init__(self, secret: str, max_age_seconds: int) -> None:
        if len(secret) < 16:
            raise ValueError(
                f"The session secret has {len(secret)} characters; give at least 16 (ICH_SESSION_SECRET)."
            )
        # A key derived for this one purpose, so the secret could sign other things safely.
        self._key = hashlib.sha256(b"ich-session-cookie\x00" + secret.encode("utf-8")).digest()
        self.max_age_seconds = max_age_seconds

    def _signature(self, message: bytes) -> str:
        return _encode(hmac.new(self._key, message, hashlib.sha256).digest())

    def dumps(self, data: dict[str, Any], now: float | None = None) -> str:
        payload = _encode(json.dumps(data, separators=(",", ":")).encode("utf-8"))
        message = f"{payload}.{int(time.time() if now is None else now)}"
        return f"{message}.{self._signature(message.encode('ascii'))}"

    def loads(self, token: str | None, now: float | None = None) -> dict[str, Any] | None:
        """The session in ``token``; ``None`` when it is missing, altered or older than the limit."""
        if not token:
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        payload, issued, signature = parts
        message = f"{payload}.{issued}".encode("ascii", errors="replace")
        if not hmac.compare_digest(
            signature.encode("ascii", errors="replace"), self._signature(message).encode()
        ):
            return None
        current = time.time() if now is None else now
        if not issued.isdigit() or current - int(issued) > self.max_age_seconds:
            return None
        try:
            data = json.loads(_decode(payload))
        except (ValueError, binascii.Error):
            return None
        return data if isinstance(data, dict) else None


def session_secret(settings: Settings) -> str:
    """``ICH_SESSION_SECRET``, else the secret kept in the data folder (created on first use).

    A kept secret lets sessions survive a restart and be shared by every worker process.
    """
    configured = settings.session_secret.get_secret_value().strip()
    if configured:
        return configured
    path = settings.data_dir / SECRET_FILE
    if path.is_file():
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: another worker
    # starting at the same moment either wins the link or reads a complete file.
    temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    try:
        os.link(temporary, path)
        logger.info("Created a session secret in the data folder.")
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> str:
    secret = path.read_text(encoding="ascii").strip()
    if not secret:
        raise RuntimeError(f"The session secret file {path} is empty; delete it to create a new one.")
    return secret


class SessionMiddleware:
    """Puts the signed-cookie session in ``scope["session"]`` (``request.session``) and writes it back.

    The signer is made on the first request, after the lifespan has prepared the data folder,
    so building the app touches no files.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._signer: SessionSigner | None = None

    @property
    def signer(self) -> SessionSigner:
        if self._signer is None:
            max_age = int(self.settings.session_hours * 3600)
            self._signer = SessionSigner(session_secret(self.settings), max_age)
        return self._signer

    def _cookie(self, value: str, max_age: int) -> str:
        attributes = [f"{SESSION_COOKIE}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
        if self.settings.session_cookie_secure:
            attributes.append("Secure")
        return "; ".join(attributes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        signer = self.signer
        cookies = HTTPConnection(scope).cookies
        had_cookie = SESSION_COOKIE in cookies
        scope["session"] = signer.loads(cookies.get(SESSION_COOKIE)) or {}

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                session: dict[str, Any] = scope["session"]
                headers = MutableHeaders(scope=message)
                if session:
                    headers.append("Set-Cookie", self._cookie(signer.dumps(session), signer.max_age_seconds))
                elif had_cookie:
                    headers.append("Set-Cookie", self._cookie("", 0))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token, created when the session has none."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_valid(session: dict[str, Any], submitted: str | None) -> bool:
    """Whether a form's token matches its session's (compared in constant time)."""
    expected = session.get("csrf")
    if not isinstance(expected, str) or not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), submitted.encode("utf-8"))


def start_signed_in_session(session: dict[str, Any], key_digest: str, prefix: str, name: str) -> None:
    """Replace the session with a signed-in one and a fresh CSRF token (no fixation)."""
    session.clear()
    session.update(
        {"key_digest": key_digest, "key_prefix": prefix, "key_name": name, "signed_in_at": int(time.time())}
    )
    csrf_token(session)


def end_session(session: dict[str, Any]) -> None:
    session.clear()
