"""Prometheus metrics; like the health probes, no API key (they hold counts, no identifiers)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.core.metrics import Metrics

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def read_metrics(request: Request) -> Response:
    """Request counts and latency by route, predictions by label and model, inference time, errors."""
    metrics: Metrics = request.app.state.metrics
    return Response(content=metrics.render(), media_type=metrics.content_type)
