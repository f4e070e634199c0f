"""Alembic migrations of the service's database; run them with ``python -m app.cli db upgrade``."""
