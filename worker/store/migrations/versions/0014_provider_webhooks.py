"""Provider webhooks the poller registers (issue 14): `poller providers webhooks sync`.

Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.types import UTCDateTime

revision, down_revision = "0014", "0013"


def upgrade() -> None:
    op.create_table(
        "provider_webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("account", sa.String(80), nullable=False),
        sa.Column("remote_id", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(80), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),  # encrypted (worker.store.crypto.EncryptedText)
        sa.Column("made", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provider_webhooks"),
        sa.UniqueConstraint("provider", "account", "remote_id", name="uq_provider_webhooks_remote"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("provider_webhooks")
