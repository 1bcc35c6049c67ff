"""The schedule in a narrow table of its own (issue 13): ``item_schedules``.

``next_poll_at``, ``lease_id``, ``claims_since_poll`` and ``due_since`` move off ``items`` with the
due and stuck indexes. Every claim and poll moved them, and as ``next_poll_at`` was in the due
index no update of an item was ever made in place: each rewrote a wide row into all of the
table's indexes. ``items`` also gets room on its pages (PostgreSQL fillfactor 85) for a quiet
poll's write to stay on its page, which it now can: it changes no indexed column.

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import UTCDateTime

revision, down_revision = "0015", "0014"

_MOVED = ("next_poll_at", "lease_id", "claims_since_poll", "due_since")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:  # no claim or poll may move a schedule between the copy and the drop
        op.execute("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "item_schedules",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("next_poll_at", UTCDateTime(), nullable=True),
        sa.Column("lease_id", sa.Integer(), nullable=False),
        sa.Column("claims_since_poll", sa.Integer(), nullable=False),
        sa.Column("due_since", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_item_schedules_item_id_items",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name="pk_item_schedules"),
    )
    # A finished or paused item's leftover claim count is dropped: the stuck index holds active
    # items only, as the schedule's invariant says.
    op.execute("INSERT INTO item_schedules (item_id, provider, next_poll_at, lease_id, claims_since_poll, due_since) "
               "SELECT id, provider, next_poll_at, lease_id, "
               "CASE WHEN state = 'active' THEN claims_since_poll ELSE 0 END, due_since FROM items")
    op.create_index("ix_item_schedules_due", "item_schedules",
                    [sa.text("coalesce(due_since, next_poll_at)"), "next_poll_at"])
    op.create_index("ix_item_schedules_stuck", "item_schedules", ["provider"],
                    sqlite_where=sa.text("claims_since_poll >= 3"), postgresql_where=sa.text("claims_since_poll >= 3"))
    op.drop_index("ix_items_due", table_name="items")
    op.drop_index("ix_items_stuck", table_name="items")
    for column in _MOVED:
        # ALTER TABLE ... DROP COLUMN on both (SQLite 3.35+): no rebuild of items and its triggers.
        op.execute(f"ALTER TABLE items DROP COLUMN {column}")
    if postgresql:
        op.execute("ALTER TABLE items SET (fillfactor = 85)")
        op.execute("ANALYZE item_schedules")  # the due queries are planned by its statistics


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE items RESET (fillfactor)")
    op.add_column("items", sa.Column("next_poll_at", UTCDateTime(), nullable=True))
    op.add_column("items", sa.Column("lease_id", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("items", sa.Column("claims_since_poll", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("items", sa.Column("due_since", UTCDateTime(), nullable=True))
    op.execute("UPDATE items SET " + ", ".join(
        f"{c} = (SELECT s.{c} FROM item_schedules s WHERE s.item_id = items.id)" for c in _MOVED[:1] + _MOVED[3:])
        + ", " + ", ".join(
        f"{c} = coalesce((SELECT s.{c} FROM item_schedules s WHERE s.item_id = items.id), 0)" for c in _MOVED[1:3]))
    op.create_index("ix_items_due", "items", [sa.text("coalesce(due_since, next_poll_at)"), "next_poll_at"])
    op.create_index("ix_items_stuck", "items", ["provider"],
                    sqlite_where=sa.text("claims_since_poll >= 3"), postgresql_where=sa.text("claims_since_poll >= 3"))
    op.drop_table("item_schedules")
    if op.get_bind().dialect.name == "postgresql":  # as 0014 had them (SQLite cannot drop a default)
        for column in ("lease_id", "claims_since_poll"):
            op.alter_column("items", column, server_default=None)
