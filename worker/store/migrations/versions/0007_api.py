"""The HTTP API: API keys, item labels and external ids, subscription label filters.

Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import JSONDoc, UTCDateTime

revision, down_revision = "0007", "0006"


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("labels", JSONDoc, nullable=True))
        batch.add_column(sa.Column("external_id", sa.String(200), nullable=True))
        batch.create_index("ix_items_external_id", ["external_id"])
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("labels", JSONDoc, nullable=True))
    op.create_table(
        "item_labels",
        sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id", ondelete="CASCADE",
                                                       name="fk_item_labels_item_id_items"), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "key", name="pk_item_labels"),
    )
    op.create_index("ix_item_labels_lookup", "item_labels", ["key", "value", "item_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("prefix", sa.String(20), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("read_only", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("last_used_at", UTCDateTime, nullable=True),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("digest", name="uq_api_keys_digest"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_item_labels_lookup", table_name="item_labels")
    op.drop_table("item_labels")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("labels")
    with op.batch_alter_table("items") as batch:
        batch.drop_index("ix_items_external_id")
        batch.drop_column("external_id")
        batch.drop_column("labels")
