"""Encrypt the secrets stored in clear: webhook secrets and Billit's refresh and access tokens.

The columns stay Text; their values become ``fernet:...`` (worker.store.crypto). Rows are read
raw, so values already encrypted are left alone and running this twice changes nothing. The keys
are the process's (POLLER_SECRET_KEYS, or the generated key file); an empty database needs none.

Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

from worker.store.crypto import rewrite_secrets

revision, down_revision = "0006", "0005"

#: The secret columns as of this revision (frozen here: later models may move them).
COLUMNS = {
    "subscriptions": ("id", ("secret", "previous_secret")),
    "credentials": ("key", ("refresh_token", "access_token")),
}


def upgrade() -> None:
    rewrite_secrets(op.get_bind(), "encrypt", columns=COLUMNS)


def downgrade() -> None:
    # The code of revision 0005 reads these columns as plain text.
    rewrite_secrets(op.get_bind(), "decrypt", columns=COLUMNS)
