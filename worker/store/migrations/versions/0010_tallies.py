"""Running counts of items and deliveries (worker.store.tallies), kept by triggers.

Every insert and delete of an item or delivery, and every change of a counted column, appends a
delta row; `poller status`, the dashboard and the metrics read the few tally rows instead of
counting a million items and ten million deliveries. PostgreSQL's insert and delete triggers run
once per statement (a batch of 10,000 items writes one row per group), the update triggers once
per row whose counted columns really change (a quiet poll does not set them at all).

The tallies are seeded from the rows there are, under the triggers' own table lock (PostgreSQL) or
the write lock (SQLite), so nothing written meanwhile is missed or counted twice. ix_items_counts,
which the counts used to read, goes; the due index gains due_since (the claim's order).

A later migration that rebuilds ``items`` or ``deliveries`` on SQLite (Alembic's batch mode copies
the table) drops their triggers with the old table: it must make them again.

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import BigId

revision, down_revision = "0010", "0009"

#: table -> (tally table, counted columns)
COUNTED = {"items": ("item_tallies", ("provider", "account", "state", "interval_s")),
           "deliveries": ("delivery_tallies", ("subscription_id", "state"))}


def _sqlite(table: str, tally: str, cols: tuple[str, ...]) -> list[str]:
    names = ", ".join(cols)

    def values(row: str, n: int) -> str:
        return f"({', '.join(f'{row}.{c}' for c in cols)}, {n})"

    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in cols)
    return [
        f"CREATE TRIGGER {table}_tally_insert AFTER INSERT ON {table} BEGIN "
        f"INSERT INTO {tally} ({names}, n) VALUES {values('NEW', 1)}; END",
        f"CREATE TRIGGER {table}_tally_delete AFTER DELETE ON {table} BEGIN "
        f"INSERT INTO {tally} ({names}, n) VALUES {values('OLD', -1)}; END",
        f"CREATE TRIGGER {table}_tally_update AFTER UPDATE OF {names} ON {table} WHEN {changed} BEGIN "
        f"INSERT INTO {tally} ({names}, n) VALUES {values('OLD', -1)}, {values('NEW', 1)}; END",
    ]


def _postgresql(table: str, tally: str, cols: tuple[str, ...]) -> list[str]:
    names = ", ".join(cols)
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in cols)
    old = ", ".join(f"OLD.{c}" for c in cols)
    new = ", ".join(f"NEW.{c}" for c in cols)
    return [
        f"""CREATE FUNCTION {table}_tally_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {tally} ({names}, n) SELECT {names}, count(*) FROM new_rows GROUP BY {names};
  ELSE
    INSERT INTO {tally} ({names}, n) SELECT {names}, -count(*) FROM old_rows GROUP BY {names};
  END IF;
  RETURN NULL;
END $$""",
        f"""CREATE FUNCTION {table}_tally_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {tally} ({names}, n) VALUES ({old}, -1), ({new}, 1);
  RETURN NULL;
END $$""",
        f"CREATE TRIGGER {table}_tally_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_tally_rows()",
        f"CREATE TRIGGER {table}_tally_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_tally_rows()",
        f"CREATE TRIGGER {table}_tally_update AFTER UPDATE OF {names} ON {table} FOR EACH ROW "
        f"WHEN ({changed}) EXECUTE FUNCTION {table}_tally_change()",
    ]


def upgrade() -> None:
    op.create_table(
        "item_tallies",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("account", sa.String(80), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "delivery_tallies",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, (tally, cols) in COUNTED.items():
        if postgres:
            # Writers wait until the seed and the triggers commit together.
            op.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        for statement in (_postgresql if postgres else _sqlite)(table, tally, cols):
            op.execute(statement)
        names = ", ".join(cols)
        op.execute(f"INSERT INTO {tally} ({names}, n) SELECT {names}, count(*) FROM {table} GROUP BY {names}")
    op.drop_index("ix_items_counts", table_name="items")
    # The dispatch claim orders the due items by when each first came due: with due_since in the
    # index it reads no row of the table (at 1,000,000 items, 45 ms a claim before).
    op.create_index("ix_items_due", "items", ["next_poll_at", "due_since"])
    op.drop_index("ix_items_next_poll_at", table_name="items")


def downgrade() -> None:
    op.create_index("ix_items_next_poll_at", "items", ["next_poll_at"])
    op.drop_index("ix_items_due", table_name="items")
    op.create_index("ix_items_counts", "items", ["provider", "account", "state", "interval_s"])
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, (tally, _cols) in COUNTED.items():
        for kind in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER {table}_tally_{kind}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION {table}_tally_rows()")
            op.execute(f"DROP FUNCTION {table}_tally_change()")
        op.drop_table(tally)
