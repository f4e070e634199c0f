"""Service settings, read from environment variables prefixed ``ICH_``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Every setting has an embedded default, so the service runs with none set."""

    model_config = SettingsConfigDict(env_prefix="ICH_", env_file=".env", extra="ignore")

    host: str = Field("127.0.0.1", description="Address uvicorn listens on.")
    port: int = Field(8000, description="Port uvicorn listens on.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    data_dir: Path = Field(
        PROJECT_ROOT / "data", description="Folder for the SQLite database and stored files."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file ich.sqlite3 in the data folder."
    )
    storage_dir: Path | None = Field(
        None, description="Uploaded images, overlays and reports; default: DATA_DIR/storage."
    )
    model_store: Path = Field(PROJECT_ROOT / "model_store", description="Folder of model bundles.")
    default_model: str = Field(
        "ich-multitask",
        description="Model name used when a request names none (its newest version in the model store).",
    )
    segmentation_model: str = Field(
        "ich-unet",
        description="Segmentation model (newest version in the model store) that outlines haemorrhage by "
        "subtype on slices analysed by a classifier that does not outline itself (a multitask model "
        "does); empty, or not in the store, leaves 'segmentation' null in their results.",
    )
    operating_point: Path | None = Field(
        None,
        description="Site operating point for the served model: a JSON file written by 'python -m "
        "ml.evaluate --choose-threshold 0.95 --write-operating-point FILE'; empty: the model card's "
        "thresholds. The service refuses to start when it cannot be read or was chosen for another "
        "model or version.",
    )
    slice_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Slice decision threshold of the served model, between 0 and 1; overrides the "
        "operating point file's and the model card's.",
    )
    study_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Study decision threshold of the served model, between 0 and 1; overrides the "
        "operating point file's and the model card's.",
    )
    max_upload_mb: float = Field(20.0, gt=0, description="Largest accepted upload, in MiB.")
    max_study_upload_mb: float = Field(
        500.0, gt=0, description="Largest accepted whole-study upload (several DICOM files or a ZIP), in MiB."
    )
    max_study_slices: int = Field(1000, ge=1, description="Most slices analysed in one study.")
    max_image_pixels: int = Field(50_000_000, gt=0, description="Largest accepted image, in pixels.")
    rate_limit_per_minute: float = Field(
        120.0,
        ge=0,
        description="Uploads allowed per minute for each API key and for each client address (per "
        "worker process); 0 turns rate limiting off.",
    )
    rate_limit_burst: int = Field(
        20, ge=1, description="Uploads allowed at once before the per-minute rate applies."
    )
    auth_enabled: bool = Field(True, description="Require API keys; turn off only for local experiments.")
    api_keys: str = Field("", description="Comma-separated API keys accepted in addition to stored ones.")
    log_level: str = Field("INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as plain text, or as one JSON object per line for log collectors."
    )
    migrate_on_start: bool = Field(
        True,
        description="Upgrade the database schema at start-up; turn off when a deployment step runs "
        "'python -m app.cli db upgrade' before the replicas start.",
    )
    inference_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads; 0 uses every core.")
    session_secret: SecretStr = Field(
        SecretStr(""),
        description="Key that signs browser session cookies; when empty, one is generated once and "
        "kept in DATA_DIR/session_secret.",
    )
    dicomweb_url: str | None = Field(
        None,
        description="DICOMweb root of the PACS, e.g. http://orthanc:8042/dicom-web; empty turns PACS "
        "integration off.",
    )
    dicomweb_username: str | None = Field(None, description="User name for the PACS's DICOMweb (HTTP basic).")
    dicomweb_password: SecretStr = Field(SecretStr(""), description="Password for the PACS's DICOMweb.")
    dicomweb_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of each DICOMweb request.")
    dicomweb_poll_seconds: float = Field(
        0.0,
        ge=0,
        description="Analyse new CT studies in the PACS every this many seconds; 0 turns the watcher off.",
    )
    dicomweb_poll_lookback_days: int = Field(
        1, ge=0, description="The watcher looks for studies dated from this many days ago."
    )
    analysis_claim_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="A PACS analysis or a study job whose worker has shown no sign of life for this many "
        "seconds (it died) is taken over by another worker; keep it above the slowest retrieval or store-back.",
    )
    study_job_workers: int = Field(
        2,
        ge=1,
        description="Worker threads per process that analyse study jobs (without ICH_JOB_QUEUE_URL); more "
        "than the cores gains nothing.",
    )
    job_queue_url: str | None = Field(
        None,
        description="Redis URL of the study job queue (Celery), e.g. redis://redis:6379/0; study jobs "
        "then run on worker processes ('python -m app.worker'), and the PACS watcher polls from them. "
        "Empty: jobs run on threads of the service's own processes.",
    )
    study_job_max_attempts: int = Field(
        3,
        ge=1,
        description="Times a study job interrupted by a stopped process is started before it is marked failed.",
    )
    session_hours: float = Field(12.0, gt=0, description="How long a browser sign-in lasts, in hours.")
    session_cookie_secure: bool = Field(
        False, description="Send the session cookie over HTTPS only; turn on behind a TLS proxy."
    )

    @field_validator("operating_point", "slice_threshold", "study_threshold", "job_queue_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # ICH_OPERATING_POINT= (as Compose writes an unset variable) means none, not the current folder.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def has_site_operating_point(self) -> bool:
        """Whether any setting asks for a site operating point instead of the model card's."""
        return any(
            value is not None for value in (self.operating_point, self.slice_threshold, self.study_threshold)
        )

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.data_dir / "storage"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ich.sqlite3'}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_study_upload_bytes(self) -> int:
        return int(self.max_study_upload_mb * 1024 * 1024)

    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
