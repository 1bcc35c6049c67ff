"""Retention: where the events prune has reached, and an index for pruning delivery attempts.

Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import BigId, UTCDateTime

revision, down_revision = "0008", "0007"


def upgrade() -> None:
    op.create_table(
        "retention_marks",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("position", BigId, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_retention_marks"),
    )
    op.create_index("ix_delivery_attempts_attempted_at", "delivery_attempts", ["attempted_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_attempts_attempted_at", table_name="delivery_attempts")
    op.drop_table("retention_marks")
