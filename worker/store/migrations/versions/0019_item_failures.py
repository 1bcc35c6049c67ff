"""The items with failures in a narrow table of their own (issue 13), kept by triggers on ``items``.

`poller status`, the dashboard and the metrics count the failing and retrying items by provider.
Counted from ``items``, that read visits each such item's row (for its state) wherever it lies:
polls keep changing the items' pages, so PostgreSQL never reads those counts from an index alone.
At 1,000,000 items with 2,800 failed lately that was 2,758 pages a read, 5-17 ms of `poller
status` (29 ms when shared_buffers was full of pages the polls had changed). ``item_failures``
holds one small row per item with failures, a few pages where ``items`` needs thousands.

The failure counts no longer read ``items``: the index they read there, ix_items_failures, goes.

A row is written only when an item's failures, state or provider change, and only while it has
failures: a quiet poll of a healthy item writes nothing here. Each row is its item's own, so
writers of different items never wait for each other. Deleting an item deletes its row (cascade).

The rows are seeded from the items there are, under the triggers' own table lock (PostgreSQL) or
the write lock (SQLite). A later migration that rebuilds ``items`` on SQLite (Alembic's batch mode
copies the table) drops these triggers with the old table: it must make them again.

Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision, down_revision = "0019", "0018"

COLUMNS = ("provider", "state", "consecutive_failures", "failing")
_NAMES = ", ".join(COLUMNS)
_NEW = ", ".join(f"NEW.{c}" for c in COLUMNS)


def _changed(old_differs: str) -> str:
    return " OR ".join(f"OLD.{c} {old_differs} NEW.{c}" for c in COLUMNS)


def _sqlite() -> list[str]:
    upsert = (f"INSERT INTO item_failures (item_id, {_NAMES}) VALUES (NEW.id, {_NEW}) ON CONFLICT (item_id) DO UPDATE "
              f"SET {', '.join(f'{c} = excluded.{c}' for c in COLUMNS)}")
    return [
        f"CREATE TRIGGER items_failures_insert AFTER INSERT ON items WHEN NEW.consecutive_failures > 0 "
        f"BEGIN {upsert}; END",
        f"CREATE TRIGGER items_failures_update AFTER UPDATE OF {_NAMES} ON items "
        f"WHEN NEW.consecutive_failures > 0 AND ({_changed('IS NOT')}) BEGIN {upsert}; END",
        "CREATE TRIGGER items_failures_clear AFTER UPDATE OF consecutive_failures ON items "
        "WHEN NEW.consecutive_failures <= 0 AND OLD.consecutive_failures > 0 "
        "BEGIN DELETE FROM item_failures WHERE item_id = NEW.id; END",
    ]


def _postgresql() -> list[str]:
    return [
        f"""CREATE FUNCTION items_failures_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.consecutive_failures > 0 THEN
    INSERT INTO item_failures (item_id, {_NAMES}) VALUES (NEW.id, {_NEW})
    ON CONFLICT (item_id) DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in COLUMNS)};
  ELSE
    DELETE FROM item_failures WHERE item_id = NEW.id;
  END IF;
  RETURN NULL;
END $$""",
        # Row triggers whose WHEN is false queue nothing: a quiet poll of a healthy item costs a
        # comparison, not a call.
        "CREATE TRIGGER items_failures_insert AFTER INSERT ON items FOR EACH ROW "
        "WHEN (NEW.consecutive_failures > 0) EXECUTE FUNCTION items_failures_change()",
        f"CREATE TRIGGER items_failures_update AFTER UPDATE OF {_NAMES} ON items FOR EACH ROW "
        f"WHEN ((OLD.consecutive_failures > 0 OR NEW.consecutive_failures > 0) AND ({_changed('IS DISTINCT FROM')})) "
        "EXECUTE FUNCTION items_failures_change()",
    ]


def upgrade() -> None:
    op.create_table(
        "item_failures",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name="fk_item_failures_item_id_items", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name="pk_item_failures"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # Writers wait until the seed and the triggers commit together.
        op.execute("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE")
    for statement in _postgresql() if postgres else _sqlite():
        op.execute(statement)
    op.execute(f"INSERT INTO item_failures (item_id, {_NAMES}) SELECT id, {_NAMES} FROM items "
               "WHERE consecutive_failures > 0")
    op.drop_index("ix_items_failures", table_name="items")


def downgrade() -> None:
    op.create_index("ix_items_failures", "items", ["provider", "consecutive_failures", "failing"],
                    sqlite_where=sa.text("consecutive_failures > 0"),
                    postgresql_where=sa.text("consecutive_failures > 0"))
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in ("insert", "update") if postgres else ("insert", "update", "clear"):
        op.execute(f"DROP TRIGGER items_failures_{name}" + (" ON items" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION items_failures_change()")
    op.drop_table("item_failures")
