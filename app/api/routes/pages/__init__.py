"""Web pages for clinicians, rendered on the server: one module per resource, like the API's routes.

Every page route renders its errors as pages (:mod:`.errors`); the views that turn records and
model cards into what a template shows live apart from the routes (:mod:`.views`,
:mod:`.model_views`), and the Jinja filters in :mod:`.filters`.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes.pages import auth, model, predictions, studies, upload, worklist
from app.api.routes.pages.errors import install_page_error_handler
from app.api.routes.pages.upload import STUDY_UPLOAD_PAGE

__all__ = ["STUDY_UPLOAD_PAGE", "install_page_error_handler", "router"]

router = APIRouter()
for resource in (auth, upload, studies, predictions, worklist, model):
    router.include_router(resource.router)
