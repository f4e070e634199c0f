"""Dependencies handed to routes: settings, services and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.core.config import Settings
from app.core.ratelimit import RateLimiter
from app.services.auth import KeyStore, Principal
from app.services.jobs import StudyJobs
from app.services.pacs import PacsService
from app.services.predictions import PredictionService
from app.services.registry import ModelRegistry
from app.services.studies import StudyService

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


def get_studies(request: Request) -> StudyService:
    service: StudyService = request.app.state.studies
    return service


def get_jobs(request: Request) -> StudyJobs:
    jobs: StudyJobs = request.app.state.jobs
    return jobs


def get_pacs(request: Request) -> PacsService:
    service: PacsService = request.app.state.pacs
    return service


def get_key_store(request: Request) -> KeyStore:
    keys: KeyStore = request.app.state.keys
    return keys


SEGMENT_HELP = (
    "Outline haemorrhage by subtype with the segmentation model (when one is loaded); false skips it "
    "and saves its time. As a query parameter or a form field."
)


def segment_wanted(
    segment: Annotated[bool, Query(description=SEGMENT_HELP)] = True,
    segment_field: Annotated[
        bool | None, Form(alias="segment", title="Segment", description=SEGMENT_HELP)
    ] = None,
) -> bool:
    """Whether an upload is to be outlined: false when either the query or the form says so."""
    return segment and segment_field is not False


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SegmentWanted = Annotated[bool, Depends(segment_wanted)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
PredictionServiceDep = Annotated[PredictionService, Depends(get_predictions)]
StudyServiceDep = Annotated[StudyService, Depends(get_studies)]
PacsServiceDep = Annotated[PacsService, Depends(get_pacs)]
StudyJobsDep = Annotated[StudyJobs, Depends(get_jobs)]
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


def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


def client_address(request: Request) -> str:
    """The caller's address as the server saw it (behind a proxy: run uvicorn with --proxy-headers)."""
    return request.client.host if request.client is not None else "unknown"


def limit_upload(request: Request, principal: Principal) -> None:
    """Count one upload against the caller's key and address (429 when either is over its limit)."""
    get_rate_limiter(request).acquire(
        f"key:{principal.prefix or principal.name}", f"ip:{client_address(request)}"
    )


def require_upload_allowance(request: Request, user: CurrentUser) -> Principal:
    """An authenticated caller who is within the upload rate limits."""
    limit_upload(request, user)
    return user


UploadUser = Annotated[Principal, Depends(require_upload_allowance)]
