"""Logging: text or JSON lines, a request id per request, and no patient data.

Request lines name the route template (``/api/v1/predictions/{prediction_id}``), never the raw
path or the query string, so identifiers sent in URLs or forms never reach the log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
import warnings
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal
from weakref import WeakKeyDictionary

from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.metrics import Metrics

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request id is echoed only when it looks like an id, never free text.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Attributes every LogRecord has; anything else on a record was passed through ``extra``.
_RECORD_ATTRIBUTES = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime", "color_message"]
)

# Libraries whose log lines quote DICOM element values (UIDs, dates, names) or whole URLs with
# their query strings, and Alembic's start-up chatter: only their problems are logged.
QUIET_LOGGERS = {
    "pydicom": logging.ERROR,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "alembic": logging.WARNING,
}

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
request_logger = logging.getLogger("app.requests")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"Unknown log format {log_format!r}; expected 'text' or 'json'.")


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Send records to stderr in the chosen format, unless a handler is already installed.

    Under ``python -m app`` uvicorn installs the handler from ``uvicorn_log_config``; under
    tests the test runner's handlers stay as they are.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(make_formatter(log_format))
        root.addHandler(handler)
    root.setLevel(level.upper())
    quiet_identifying_sources()


def quiet_identifying_sources() -> None:
    """Keep libraries that quote element values or URLs out of the log, warnings included."""
    # pydicom sets its logger's level when first imported; import it first so ours stays.
    import pydicom.config  # noqa: F401

    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    # pydicom also repeats its validation messages ("Invalid value for VR DA: '19800101x'")
    # as Python warnings, which the warnings module would print to stderr.
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    warnings.filterwarnings("ignore", message=r"Invalid value for VR ")


def uvicorn_log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn: its records and the app's through one handler."""
    formatter: dict[str, Any] = (
        {"()": "app.core.logs.JsonFormatter"} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ich": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "ich", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level.upper(), "propagate": True},
            "uvicorn.error": {"level": level.upper()},
            **{name: {"level": logging.getLevelName(quiet)} for name, quiet in QUIET_LOGGERS.items()},
        },
    }


def route_template(scope: Scope) -> str:
    """The path template of the request's route, or ``unmatched``: never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path.rstrip("/") + "/{path}" if isinstance(route, Mount) else path
    return _documented_template(scope) or "unmatched"


_documented_paths: WeakKeyDictionary[Any, list[tuple[re.Pattern[str], str]]] = WeakKeyDictionary()


def _documented_template(scope: Scope) -> str | None:
    """For requests answered before routing (the upload limit's 413): the API path they target."""
    app = scope.get("app")
    openapi = getattr(app, "openapi", None)
    if openapi is None:
        return None
    patterns = _documented_paths.get(app)
    if patterns is None:
        patterns = [(compile_path(template)[0], template) for template in openapi().get("paths", {})]
        _documented_paths[app] = patterns
    path = scope.get("path", "")
    return next((template for pattern, template in patterns if pattern.match(path)), None)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestObserver:
    """Pure ASGI middleware: request id, one log line and the HTTP metrics for each request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        status = 500
        failure: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != REQUEST_ID_HEADER.lower().encode()
                ]
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            failure = type(exc).__name__
            status = 500
            self.metrics.count_error(failure)
            raise
        finally:
            duration = time.perf_counter() - started
            method = scope.get("method", "GET")
            method = method if method in _KNOWN_METHODS else "OTHER"
            route = route_template(scope)
            self.metrics.observe_request(method, route, status, duration)
            fields: dict[str, Any] = {
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration * 1000.0, 1),
            }
            if failure:
                fields["error"] = failure
            request_logger.log(
                logging.ERROR if failure else logging.INFO,
                "%s %s %d %.1f ms request_id=%s",
                method,
                route,
                status,
                duration * 1000.0,
                request_id,
                extra=fields,
            )
            current_request_id.reset(token)
