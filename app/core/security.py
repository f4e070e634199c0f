"""Response headers every answer carries, API and pages alike."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Browsers must take the declared type as it is: an image stays an image, JSON stays JSON,
# and nothing an upload contained can be sniffed into HTML or script.
ALWAYS = {"X-Content-Type-Options": "nosniff"}


class SecurityHeaders:
    """Pure ASGI middleware that adds :data:`ALWAYS` to every HTTP response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
