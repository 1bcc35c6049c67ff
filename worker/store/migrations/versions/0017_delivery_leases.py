"""A claimed delivery's lease in a column of its own (issue 13): the claim no longer moves
``next_attempt_at``, an indexed column, so on PostgreSQL it is a heap-only (HOT) update that
writes no index entry (it wrote one into each of the table's six indexes), and on SQLite it
rewrites the row alone. Free room on each new page (fillfactor 90) lets those updates stay on
their page.

Added empty: a delivery in flight during the upgrade keeps its lease in ``next_attempt_at``, as
before, and is retried when that passes.

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import UTCDateTime

revision, down_revision = "0017", "0016"


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("leased_until", UTCDateTime(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries SET (fillfactor = 90)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
    # The leases fold back into next_attempt_at, where the older code keeps them.
    op.execute("UPDATE deliveries SET next_attempt_at = leased_until "
               "WHERE leased_until IS NOT NULL AND state = 'pending' AND next_attempt_at < leased_until")
    op.execute("ALTER TABLE deliveries DROP COLUMN leased_until")
