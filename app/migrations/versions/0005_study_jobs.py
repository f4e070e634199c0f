"""Studies as jobs: status, progress, attempts and the reason of a failure.

Every study stored before is a finished analysis: it reads as ``done``, with all its slices done.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "status",
    "progress_done",
    "progress_total",
    "attempts",
    "failure",
    "failure_status",
    "owner",
    "heartbeat_at",
)


def upgrade() -> None:
    op.add_column("studies", sa.Column("status", sa.String(length=10), server_default="done", nullable=False))
    op.add_column("studies", sa.Column("progress_done", sa.Integer(), server_default="0", nullable=False))
    op.add_column("studies", sa.Column("progress_total", sa.Integer(), server_default="0", nullable=False))
    op.add_column("studies", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("studies", sa.Column("failure", sa.Text(), nullable=True))
    op.add_column("studies", sa.Column("failure_status", sa.Integer(), nullable=True))
    op.add_column("studies", sa.Column("owner", sa.String(length=100), nullable=True))
    op.add_column("studies", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_studies_status", "studies", ["status"])
    op.execute("UPDATE studies SET progress_done = num_slices, progress_total = num_slices")


def downgrade() -> None:
    op.drop_index("ix_studies_status", table_name="studies")
    with op.batch_alter_table("studies") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
