"""Start-up steps shared by ``python -m app`` and the application's lifespan.

``python -m app`` runs ``prepare`` once in the parent process before uvicorn starts its workers,
so several workers never race to upgrade the schema or to create the first API key; the
lifespan runs the same steps again, which then find nothing to do.
"""

from __future__ import annotations

import logging
import sys

from app.core.config import Settings
from app.db import Database
from app.services.auth import KeyStore

logger = logging.getLogger("app")


def ensure_api_key(settings: Settings, keys: KeyStore) -> None:
    """With authentication on and no key anywhere, create one and show it once."""
    if not settings.auth_enabled:
        logger.warning(
            "Authentication is OFF (ICH_AUTH_ENABLED=false): anyone who reaches the service can use it."
        )
        return
    if keys.has_any():
        return
    key = keys.create("initial")
    # Shown once on the console, as a notebook server shows its token; only its hash is stored.
    sys.stderr.write(
        "\n    No API key existed, so one was created. Keep it; it is not shown again:\n"
        f"        {key}\n"
        "    Send it as 'Authorization: Bearer <key>'; manage keys with 'python -m app.cli keys'.\n\n"
    )
    sys.stderr.flush()


def prepare(settings: Settings) -> None:
    """Refuse an unusable site operating point, upgrade the schema (unless turned off) and make
    sure an API key exists.

    Raises:
        InvalidSettings: the operating point cannot be used (the message says why).
    """
    from app.services.operating_points import check_operating_point

    check_operating_point(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.resolved_database_url)
    try:
        if settings.migrate_on_start:
            database.migrate()
        if settings.auth_enabled:
            ensure_api_key(settings, KeyStore(database, settings.api_key_list()))
    finally:
        database.dispose()
