"""What the poller keeps per provider account: rotating credentials, credential failures,
incremental sweeps and the webhooks it registered with the provider."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.crypto import EncryptedText
from worker.store.declarative import Base
from worker.store.types import UTCDateTime


class Credential(Base):
    """A rotating credential (Billit's single-use refresh token) and the access token it bought.

    The tokens are stored encrypted (worker.store.crypto); the rest of the row is not secret.
    """

    __tablename__ = "credentials"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    refresh_token: Mapped[str | None] = mapped_column(EncryptedText)
    access_token: Mapped[str | None] = mapped_column(EncryptedText)
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    access_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Digest of the configured seed token, to notice when an operator configures a new one.
    seed_fingerprint: Mapped[str | None] = mapped_column(String(64))
    #: A refresher holds the row until then; a crashed one frees it by time.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProviderAccount(Base):
    """What the poller remembers about one provider account: a credential failure, so that
    ``provider.auth_failed`` is raised once per account rather than once per item."""

    __tablename__ = "provider_accounts"

    provider: Mapped[str] = mapped_column(String(40), primary_key=True)
    account: Mapped[str] = mapped_column(String(80), primary_key=True)
    auth_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auth_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Sweep(Base):
    """One provider account's incremental sweep (worker.sweeps): how far it has read the
    provider's change list, and when it runs next."""

    __tablename__ = "sweeps"

    provider: Mapped[str] = mapped_column(String(40), primary_key=True)
    account: Mapped[str] = mapped_column(String(80), primary_key=True)
    #: The newest modification time read, verbatim in the provider's own format and zone.
    watermark: Mapped[str | None] = mapped_column(Text)
    #: JSON list of the entries ``[ref, time]`` read within the overlap before the watermark: the
    #: next sweep reads that window again (worker.sweep_marks) and skips these.
    at_mark: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A sweep under way holds the row until then; a crashed one frees it by running out.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    #: Set when DEGRADED_AFTER sweeps in a row failed (``provider.degraded``), cleared by the
    #: next success (``provider.restored``): worker.reconcile.
    degraded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProviderWebhook(Base):
    """A webhook registered with a provider so that it pushes to our ingress
    (`poller providers webhooks sync`, worker.provider_webhooks). Its secret, which signs the
    pushes, is encrypted at rest."""

    __tablename__ = "provider_webhooks"
    __table_args__ = (UniqueConstraint("provider", "account", "remote_id", name="uq_provider_webhooks_remote"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(40))
    account: Mapped[str] = mapped_column(String(80))
    #: The provider's id of the webhook (Billit's WebhookID).
    remote_id: Mapped[str] = mapped_column(String(100))
    #: What it pushes (Billit's EntityType and EntityUpdateType: ``Order U``).
    topic: Mapped[str] = mapped_column(String(80))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str | None] = mapped_column(EncryptedText)
    #: Registered by the poller (``--remove`` deletes it at the provider), or one found there
    #: with its secret and adopted (``--remove`` only forgets it).
    made: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
