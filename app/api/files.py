"""Stored files as responses, for the API and the pages alike."""

from __future__ import annotations

from fastapi import Response

# How long a browser may keep a stored file: five minutes for the pages, an hour for the API.
PAGE_MAX_AGE_SECONDS = 300
API_MAX_AGE_SECONDS = 3600


def stored_file_response(
    data: bytes, media_type: str, max_age: int, attachment_name: str | None = None
) -> Response:
    """A stored file, cached by the browser alone for ``max_age`` seconds; saved as
    ``attachment_name`` instead of shown when one is given."""
    headers = {"Cache-Control": f"private, max-age={max_age}"}
    if attachment_name is not None:
        headers["Content-Disposition"] = f'attachment; filename="{attachment_name}"'
    return Response(content=data, media_type=media_type, headers=headers)
