"""Indexes for the operator paths at scale: `poller status`, the metrics, the dashboard and the prune
read indexes, never a whole large table.

The partial indexes hold only the rows their condition admits (failing, stuck and finished items),
so a poll of a healthy item writes none of them. Their conditions are spelled here as they were at
this revision (``STUCK_AFTER_CLAIMS`` = 3; finished = terminal or gone), not imported.

Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0009", "0008"


def _partial(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_index("ix_items_counts", "items", ["provider", "account", "state", "interval_s"])
    op.create_index("ix_items_failures", "items", ["provider", "consecutive_failures", "failing"],
                    **_partial("consecutive_failures > 0"))
    op.create_index("ix_items_stuck", "items", ["provider"], **_partial("claims_since_poll >= 3"))
    op.create_index("ix_items_finished", "items", ["updated_at"], **_partial("state IN ('terminal', 'gone')"))
    op.create_index("ix_deliveries_state", "deliveries", ["state", "created_at", "subscription_id"])
    op.create_index("ix_deliveries_pending_chain", "deliveries", ["subscription_id", "item_id", "event_position", "id"],
                    **_partial("state = 'pending'"))


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_chain", table_name="deliveries")
    op.drop_index("ix_deliveries_state", table_name="deliveries")
    for name in ("ix_items_finished", "ix_items_stuck", "ix_items_failures", "ix_items_counts"):
        op.drop_index(name, table_name="items")
