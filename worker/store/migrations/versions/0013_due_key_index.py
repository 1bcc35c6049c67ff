"""The due index in claim order (issue 13): ``coalesce(due_since, next_poll_at), next_poll_at``.

The old index (next_poll_at, due_since) gave the claim its range but not its order: a claim of
200 read every due row from the table and sorted them (at 1,000,000 items on PostgreSQL, 34,000
due rows in 12,400 heap pages, 45 ms warm and 137 ms cold). In claim order it reads the first 200
entries, and skips the items under a lease within the index (next_poll_at beside the key).

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0013", "0012"


def upgrade() -> None:
    op.drop_index("ix_items_due", table_name="items")
    op.create_index("ix_items_due", "items", [sa.text("coalesce(due_since, next_poll_at)"), "next_poll_at"])


def downgrade() -> None:
    op.drop_index("ix_items_due", table_name="items")
    op.create_index("ix_items_due", "items", ["next_poll_at", "due_since"])
