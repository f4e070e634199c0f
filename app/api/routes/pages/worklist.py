"""The worklist: analysed studies and slices, searchable, page by page."""

from __future__ import annotations

import math
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Query, Request, Response
from fastapi.responses import HTMLResponse

from app.api.deps import PredictionServiceDep, RegistryDep, StudyServiceDep
from app.api.routes.pages.errors import page_router
from app.api.routes.pages.rendering import render
from app.api.routes.pages.views import current_decision
from app.api.web_auth import PageUser
from app.core.labels import Label

router = page_router()


@router.get("/worklist", response_class=HTMLResponse)
def worklist_page(
    request: Request,
    user: PageUser,
    service: PredictionServiceDep,
    study_service: StudyServiceDep,
    registry: RegistryDep,
    patient_id: Annotated[str, Query(max_length=100)] = "",
    result: Literal["all", Label.HEMORRHAGE, Label.NO_HEMORRHAGE, Label.OUT_OF_SCOPE] = "all",
    order: Literal["newest", "positives"] = "newest",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    """Analysed images, newest first or haemorrhage-suspected first, searchable by patient ID; the
    studies still being analysed, or whose analysis failed, apart."""
    search = patient_id.strip()
    items, total = service.list(
        page, page_size, None if result == "all" else result, search or None, order == "positives"
    )
    studies, studies_total = study_service.list(
        1, page_size, None if result == "all" else result, search or None, order == "positives"
    )
    pages = max(1, math.ceil(total / page_size))
    query = {"patient_id": search, "result": result, "order": order, "page_size": page_size}
    defaults = {"patient_id": "", "result": "all", "order": "newest", "page_size": 20}

    def link(number: int) -> str:
        chosen = {key: value for key, value in query.items() if value != defaults[key]}
        if number > 1:
            chosen["page"] = number
        return "/worklist" + (f"?{urlencode(chosen)}" if chosen else "")

    return render(
        request,
        "worklist.html",
        title="Worklist",
        nav="worklist",
        items=items,
        total=total,
        studies=studies,
        studies_total=studies_total,
        unfinished=study_service.list_unfinished(search or None),
        now={
            **{item.id: current_decision(registry, item) for item in items},
            **{item.id: current_decision(registry, item) for item in studies},
        },
        query=query,
        filtered=bool(search) or result != "all",
        page=page,
        pages=pages,
        previous_link=link(page - 1) if page > 1 else None,
        next_link=link(page + 1) if page < pages else None,
        first_link=link(1),
        page_sizes=sorted({10, 20, 50, 100, page_size}),
    )
