"""Whole-study analyses: the studies table and the per-slice results of each study.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("label", sa.String(length=20), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("aggregation", sa.String(length=20), nullable=False),
        sa.Column("num_slices", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("patient_name", sa.String(length=200), nullable=True),
        sa.Column("patient_id", sa.String(length=100), nullable=True),
        sa.Column("study_description", sa.String(length=300), nullable=True),
        sa.Column("study_date", sa.String(length=20), nullable=True),
        sa.Column("requesting_clinician", sa.String(length=200), nullable=True),
        sa.Column("timings_ms", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_studies_created_at", "studies", ["created_at"], unique=False)
    op.create_index("ix_studies_label", "studies", ["label"], unique=False)
    op.create_index("ix_studies_patient_id", "studies", ["patient_id"], unique=False)
    op.create_index("ix_studies_study_instance_uid", "studies", ["study_instance_uid"], unique=False)

    op.create_table(
        "study_slices",
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("slice_index", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("position_mm", sa.Float(), nullable=True),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", "slice_index"),
    )


def downgrade() -> None:
    op.drop_table("study_slices")
    op.drop_index("ix_studies_study_instance_uid", table_name="studies")
    op.drop_index("ix_studies_patient_id", table_name="studies")
    op.drop_index("ix_studies_label", table_name="studies")
    op.drop_index("ix_studies_created_at", table_name="studies")
    op.drop_table("studies")
