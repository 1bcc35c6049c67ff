"""Incremental sweeps (issue 14): one row per provider account that sweeps, with its watermark.

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import UTCDateTime

revision, down_revision = "0011", "0010"


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("account", sa.String(80), nullable=False),
        sa.Column("watermark", sa.Text(), nullable=True),
        sa.Column("at_mark", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("next_at", UTCDateTime(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("ok_at", UTCDateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "account", name="pk_sweeps"),
    )


def downgrade() -> None:
    op.drop_table("sweeps")
