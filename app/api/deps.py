"""Dependencies handed to routes: settings, services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.config import Settings
from app.services.auth import KeyStore, Principal
from app.services.inference import ModelRegistry
from app.services.predictions import PredictionService

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer <key>`.")


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def get_predictions(request: Request) -> PredictionService:
    service: PredictionService = request.app.state.predictions
    return service


def get_key_store(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.keys
    return keys


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
PredictionServiceDep = Annotated[PredictionService, Depends(get_predictions)]
KeyStoreDep = Annotated[KeyStore, Depends(get_key_store)]


def require_api_key(
    settings: SettingsDep,
    keys: KeyStoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller named by a valid API key (401 without one, 403 for a wrong or revoked one)."""
    if not settings.auth_enabled:
        return Principal(name="anonymous", prefix="")
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="An API key is required: send the header 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = keys.authenticate(credentials.credentials)
    if principal is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="The API key is not valid or has been revoked.")
    return principal


CurrentUser = Annotated[Principal, Depends(require_api_key)]
