"""How a page shows an error: the domain error's status and detail, never a trace."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError

from app.api.routes.pages.errors import CSRF_MESSAGE, page_error
from app.api.web_auth import CsrfRejected
from app.core.errors import InvalidUpload, ModelUnavailable, NotFound


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (NotFound("No prediction with id 'x'."), (404, "No prediction with id 'x'.", None)),
        (InvalidUpload("The file is empty."), (400, "The file is empty.", None)),
        (ModelUnavailable("Not ready."), (503, "Not ready.", None)),
        (HTTPException(404, "No plot named 'x'."), (404, "No plot named 'x'.", None)),
        (CsrfRejected(), (403, CSRF_MESSAGE, "Form not accepted")),
    ],
)
def test_known_errors_keep_their_status_and_detail(
    error: Exception, shown: tuple[int, str, str | None]
) -> None:
    assert page_error(error) == shown


def test_a_malformed_id_is_an_unknown_one_and_other_invalid_requests_a_400() -> None:
    malformed = RequestValidationError(
        [
            {
                "type": "uuid_parsing",
                "loc": ("path", "study_id"),
                "msg": "Input should be a valid UUID",
                "input": "x",
            }
        ]
    )
    assert page_error(malformed) == (404, "No study with id 'x'.", None)
    invalid = RequestValidationError(
        [{"type": "too_long", "loc": ("query", "patient_id"), "msg": "too long"}]
    )
    assert page_error(invalid) == (400, "The request was not understood. patient_id: too long", None)


def test_an_unforeseen_error_is_left_to_the_server_error_page() -> None:
    assert page_error(RuntimeError("boom")) is None
