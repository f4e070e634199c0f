"""How a page shows an error: the domain error's status and detail, never a trace."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from app.api.routes.pages.errors import CSRF_MESSAGE, page_error, page_router
from app.api.web_auth import CsrfRejected
from app.core.config import Settings
from app.core.errors import InvalidUpload, ModelUnavailable, NotFound, ServiceError, answer_for
from app.main import create_app


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


class SlotTaken(ServiceError):
    """An error declared once, for the test below: its status, page heading and retry delay."""

    status_code = 409
    title = "Slot taken"
    retry_after = 7


def test_an_error_declared_once_is_answered_alike_by_the_api_and_the_pages(settings: Settings) -> None:
    detail = "Another upload holds this slot; try again in a few seconds."
    api, pages = APIRouter(prefix="/api/v1/slot"), page_router()

    @api.get("")
    def take_slot() -> None:
        raise SlotTaken(detail)

    @pages.get("/slot")
    def slot_page() -> None:
        raise SlotTaken(detail)

    app = create_app(settings)
    app.include_router(api)
    app.include_router(pages)
    with TestClient(app) as client:
        answered = client.get("/api/v1/slot")
        shown = client.get("/slot", headers={"Accept": "text/html"})

    assert answered.status_code == shown.status_code == 409
    assert answered.json() == {"detail": detail}
    assert shown.headers["content-type"].startswith("text/html")
    assert "Slot taken" in shown.text and detail in shown.text
    assert answered.headers["Retry-After"] == shown.headers["Retry-After"] == "7"
    assert page_error(SlotTaken(detail)) == (409, detail, "Slot taken")


@pytest.mark.parametrize(
    "error",
    [NotFound("No prediction with id 'x'."), ModelUnavailable("Not ready."), HTTPException(404, "No plot.")],
)
def test_the_api_and_the_pages_read_one_mapping(error: Exception) -> None:
    api, page = answer_for(error), answer_for(error, from_page=True)
    assert api is not None and api == page
