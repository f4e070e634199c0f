"""One analysis per PACS series and model version: the analysis_claims table.

Every study already analysed from the PACS gets a ``done`` claim, so that no worker analyses it
again. Where earlier workers analysed the same series with the same model version more than
once, the newest analysis gets the claim; the older ones stay as they are, as history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain SQL that SQLite and PostgreSQL both run, and that 'db upgrade --sql' can print. A claim
# takes its study's id as its own: both are UUIDs, and a study has at most one claim.
CLAIM_EXISTING_ANALYSES = """
INSERT INTO analysis_claims (
    id, study_instance_uid, series_instance_uid, model_name, model_version,
    status, owner, claimed_at, heartbeat_at, study_id
)
SELECT
    studies.id, studies.study_instance_uid, studies.series_instance_uid, studies.model_name,
    studies.model_version, 'done', 'migration 0004', studies.created_at, studies.created_at, studies.id
FROM studies
WHERE studies.source = 'dicomweb'
    AND studies.study_instance_uid IS NOT NULL
    AND studies.series_instance_uid IS NOT NULL
    AND NOT EXISTS (
        SELECT 1 FROM studies AS newer
        WHERE newer.source = 'dicomweb'
            AND newer.study_instance_uid = studies.study_instance_uid
            AND newer.series_instance_uid = studies.series_instance_uid
            AND newer.model_name = studies.model_name
            AND newer.model_version = studies.model_version
            AND (
                newer.created_at > studies.created_at
                OR (newer.created_at = studies.created_at AND newer.id > studies.id)
            )
    )
"""


def upgrade() -> None:
    op.create_table(
        "analysis_claims",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "study_instance_uid",
            "series_instance_uid",
            "model_name",
            "model_version",
            name="uq_analysis_claims_series_model",
        ),
        sa.UniqueConstraint("study_id", name="uq_analysis_claims_study_id"),
    )
    op.execute(CLAIM_EXISTING_ANALYSES)


def downgrade() -> None:
    op.drop_table("analysis_claims")
