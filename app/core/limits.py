"""ASGI middleware that refuses request bodies over the upload limit before they are parsed."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """413 for bodies over the limit: at once from Content-Length, else while reading.

    ``max_bytes`` applies to every path except those in ``path_limits``, which maps an exact
    path (a whole-study upload, say) to its own limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    def limit_for(self, path: str) -> int:
        """The body limit of a request to ``path``."""
        return self.path_limits.get(path.rstrip("/") or "/", self.max_bytes)

    async def _refuse(self, send: Send, max_bytes: int) -> None:
        body = json.dumps(
            {"detail": f"The request is larger than the upload limit of {max_bytes / 1024 / 1024:.0f} MiB."}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(str(scope.get("path", "")))
        headers: dict[bytes, bytes] = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, max_bytes)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, max_bytes)


def upload_limit_bytes(max_upload_bytes: int) -> int:
    """Body limit: the file limit plus room for the multipart envelope and form fields."""
    return max_upload_bytes + 256 * 1024


__all__: list[Any] = ["BodySizeLimit", "upload_limit_bytes"]
