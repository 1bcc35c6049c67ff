"""The failing items in failure order (issue 13): the dashboard's "most failures first, 50 of them"
reads 50 entries from the end of ix_items_most_failures, instead of every item with a failure and
a sort (at 1,000,000 items with 3,000 failing, 10 ms of a 56 ms page on PostgreSQL, whose heap
visits are not spared while polls keep the items' pages changing). ix_items_failures stays led by
the provider: the counts by provider read it in their grouping's order on SQLite.

Like it, partial: a poll of a healthy item writes neither.

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0018", "0017"


def upgrade() -> None:
    op.create_index("ix_items_most_failures", "items", ["consecutive_failures"],
                    sqlite_where=sa.text("consecutive_failures > 0"),
                    postgresql_where=sa.text("consecutive_failures > 0"))


def downgrade() -> None:
    op.drop_index("ix_items_most_failures", table_name="items")
