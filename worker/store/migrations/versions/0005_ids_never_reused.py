"""Ids are never reused; stuck and deferred items are visible; provider accounts remember auth failures.

- SQLite hands a deleted row's id (the largest) to the next insert unless the table is declared
  AUTOINCREMENT; an untracked item's id then went to the next item and collided with the old
  item's events. Every table whose ids are public or ordered is rebuilt with AUTOINCREMENT, and the
  items counter starts past every item id the event history has ever named. PostgreSQL sequences
  never go back, so only SQLite is rebuilt.
- ``items.claims_since_poll`` counts leases handed out without a completed poll (the stuck gauge);
  ``items.due_since`` keeps when an item first came due, so a deferred item keeps its place.
- ``provider_accounts`` remembers a credential failure, so ``provider.auth_failed`` is raised once.

Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import UTCDateTime

revision, down_revision = "0005", "0004"

#: Tables whose integer ids are public (items, subscriptions) or order a stream (events, deliveries).
AUTOINCREMENT_TABLES = ("items", "snapshots", "events", "subscriptions", "deliveries", "delivery_attempts")


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    with op.batch_alter_table("items", recreate="always" if sqlite else "auto",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.add_column(sa.Column("claims_since_poll", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("due_since", UTCDateTime(), nullable=True))
    if sqlite:
        for table in AUTOINCREMENT_TABLES[1:]:
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass
        # The rebuilt table's counter starts at its largest id; an item or subscription deleted
        # before this migration may have had a larger one, which events still name.
        named = {
            "items": "(SELECT coalesce(max(item_id), 0) FROM events)",
            "subscriptions": "(SELECT coalesce(max(CAST(json_extract(data, '$.subscription_id') AS INTEGER)), 0) "
                             "FROM events WHERE type = 'subscription.disabled')",
            "events": "0",
        }
        for table, column in (("items", "id"), ("events", "position"), ("subscriptions", "id")):
            bind.exec_driver_sql(f"DELETE FROM sqlite_sequence WHERE name = '{table}'")
            bind.exec_driver_sql(f"INSERT INTO sqlite_sequence (name, seq) "
                                 f"SELECT '{table}', max(coalesce(max({column}), 0), {named[table]}) FROM {table}")
    op.create_table(
        "provider_accounts",
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("account", sa.String(80), nullable=False),
        sa.Column("auth_failed_at", UTCDateTime(), nullable=True),
        sa.Column("auth_error", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "account", name="pk_provider_accounts"),
    )


def downgrade() -> None:
    op.drop_table("provider_accounts")
    with op.batch_alter_table("items") as batch:
        batch.drop_column("due_since")
        batch.drop_column("claims_since_poll")
