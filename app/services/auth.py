"""API keys: created at random, stored as SHA-256 digests, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from app.db import ApiKey, Database

logger = logging.getLogger(__name__)

KEY_PREFIX = "ich_"


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast digest is safe; no password stretching needed.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and its public prefix."""

    name: str
    prefix: str


class KeyStore:
    """API keys from the database plus those given in settings (``ICH_API_KEYS``)."""

    def __init__(self, database: Database, configured_keys: list[str] | None = None) -> None:
        self.database = database
        self._configured = [hash_key(key) for key in configured_keys or []]

    def create(self, name: str) -> str:
        """Create a key; the plain key is returned once and never stored."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.database.session() as session:
            session.add(ApiKey(name=name, prefix=key[:12], key_hash=hash_key(key)))
        return key

    def has_any(self) -> bool:
        if self._configured:
            return True
        with self.database.session() as session:
            return session.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None

    def list(self) -> list[ApiKey]:
        with self.database.session() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))

    def revoke(self, prefix: str) -> int:
        """Revoke every active key whose prefix starts with ``prefix``; returns how many."""
        if len(prefix) < 6:
            raise ValueError("Give at least 6 characters of the key's prefix.")
        with self.database.session() as session:
            keys = session.scalars(
                select(ApiKey).where(ApiKey.prefix.startswith(prefix), ApiKey.revoked_at.is_(None))
            ).all()
            for key in keys:
                key.revoked_at = datetime.now(UTC)
            return len(keys)

    def authenticate(self, key: str) -> Principal | None:
        """The principal for ``key``, or ``None``; revoked keys fail at once."""
        digest = hash_key(key)
        for configured in self._configured:
            if hmac.compare_digest(digest, configured):
                return Principal(name="configured", prefix=key[:12])
        with self.database.session() as session:
            stored = session.scalars(
                select(ApiKey).where(ApiKey.prefix == key[:12], ApiKey.revoked_at.is_(None))
            ).all()
        for candidate in stored:
            if hmac.compare_digest(digest, candidate.key_hash):
                return Principal(name=candidate.name, prefix=candidate.prefix)
        return None

    def authenticate_digest(self, digest: str, prefix: str) -> Principal | None:
        """As ``authenticate``, from the key's digest and prefix (what a browser session keeps)."""
        for configured in self._configured:
            if hmac.compare_digest(digest, configured):
                return Principal(name="configured", prefix=prefix)
        with self.database.session() as session:
            stored = session.scalar(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )
        return Principal(name=stored.name, prefix=stored.prefix) if stored is not None else None
