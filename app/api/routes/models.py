"""Models the service has loaded, and their cards."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import CurrentUser, RegistryDep
from app.schemas import ModelOut

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("", response_model=list[ModelOut])
def list_models(user: CurrentUser, registry: RegistryDep) -> list[ModelOut]:
    """Loaded models; the default one serves requests that name none."""
    return [ModelOut(**entry) for entry in registry.describe()]


@router.get("/{name}/{version}/card")
def read_model_card(name: str, version: str, user: CurrentUser, registry: RegistryDep) -> dict[str, Any]:
    """The model card (classification or segmentation): training data, split, metrics with intervals, limits."""
    return registry.card(name, version)
