"""Reconciliation intervals (issue 14): when an account's sweeps were declared degraded.

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import UTCDateTime

revision, down_revision = "0012", "0011"


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy) on both databases: nullable, no default.
    op.add_column("sweeps", sa.Column("degraded_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("degraded_at")
