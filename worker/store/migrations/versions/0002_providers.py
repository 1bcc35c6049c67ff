"""Item versions (ETags), rotating credentials, provider-level events.

Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import UTCDateTime

revision, down_revision = "0002", "0001"


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("version", sa.String(200), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.alter_column("item_id", existing_type=sa.Integer(), nullable=True)
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=True)
    op.create_table(
        "credentials",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("access_expires_at", UTCDateTime(), nullable=True),
        sa.Column("access_issued_at", UTCDateTime(), nullable=True),
        sa.Column("seed_fingerprint", sa.String(64), nullable=True),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_credentials"),
    )


def downgrade() -> None:
    op.drop_table("credentials")
    with op.batch_alter_table("events") as batch:
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("item_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("items") as batch:
        batch.drop_column("version")
