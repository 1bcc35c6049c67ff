"""The latest snapshot's digest on its item (issue 13): a poll that changed nothing reads no snapshot.

Added empty: an item gets its digest when a poll next stores a snapshot for it or finds it
unchanged (worker.store.quiet), so the upgrade touches no rows however large the store.

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0016", "0015"


def upgrade() -> None:
    op.add_column("items", sa.Column("snapshot_digest", sa.String(32), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN on both (SQLite 3.35+), as 0015: no rebuild of items and its triggers.
    op.execute("ALTER TABLE items DROP COLUMN snapshot_digest")
