"""Results name the operating point that decided them (the model card's or a site's).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every result stored before this revision was decided at its model card's thresholds.
CARD_OPERATING_POINT = "model card default"


def upgrade() -> None:
    for table in ("predictions", "studies"):
        op.add_column(
            table,
            sa.Column("operating_point", sa.Text(), server_default=CARD_OPERATING_POINT, nullable=False),
        )


def downgrade() -> None:
    for table in ("predictions", "studies"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("operating_point")
