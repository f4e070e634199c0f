"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def read_health() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def read_readiness(request: Request) -> JSONResponse:
    """Models are loaded, the database answers and storage is writable."""
    state = request.app.state
    checks = {
        "model": state.registry.ready,
        "database": state.database.ping(),
        "storage": state.files.is_writable(),
    }
    ready = all(checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())
