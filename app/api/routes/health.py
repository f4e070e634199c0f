"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def read_health() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def read_readiness(request: Request) -> JSONResponse:
    """The default model is loaded, the database answers and storage is writable.

    ``models`` names what serves: the default classifier and what outlines its slices (the
    segmentation model, or the classifier itself when it is a multitask model). Outlines are
    optional and do not decide readiness.
    """
    state = request.app.state
    registry = state.registry
    checks = {
        "model": registry.ready,
        "database": state.database.ping(),
        "storage": state.files.is_writable(),
    }
    ready = all(checks.values())
    classifier = None
    if registry.ready:
        serving = registry.get()
        classifier = f"{serving.name}/{serving.version}"
    outliner = registry.outliner()
    models = {
        "classification": classifier,
        "segmentation": f"{outliner.name}/{outliner.version}" if outliner is not None else None,
    }
    body = Readiness(status="ready" if ready else "not ready", checks=checks, models=models)
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())
