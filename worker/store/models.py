"""SQLAlchemy models: tracked items, their snapshots and the change events (the outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

# The provider account models are importable from here too, as every model is (and so are in
# Base.metadata whenever the models are).
from worker.store.account_models import Credential as Credential
from worker.store.account_models import ProviderAccount as ProviderAccount
from worker.store.account_models import ProviderWebhook as ProviderWebhook
from worker.store.account_models import Sweep as Sweep
from worker.store.crypto import EncryptedText
from worker.store.declarative import NAMING as NAMING
from worker.store.declarative import Base, partial
from worker.store.schedule import DUE_KEY as DUE_KEY
from worker.store.schedule import SCHEDULE_FIELDS, OnSchedule
from worker.store.schedule import STUCK_AFTER_CLAIMS as STUCK_AFTER_CLAIMS
from worker.store.schedule import Schedule as Schedule
from worker.store.schedule import due_by as due_by
from worker.store.types import BigId, JSONDoc, UTCDateTime

#: The states of an item polled no more (``ItemState.TERMINAL``, ``ItemState.GONE``): the prune's
#: finished items, and the partial index ``ix_items_finished`` (a change needs a migration).
FINISHED = ("terminal", "gone")


class Item(Base):
    """A provider resource being watched.

    Its schedule (``next_poll_at``, ``lease_id``, ``claims_since_poll``, ``due_since``) is a row of
    ``item_schedules`` (worker.store.schedule), made with the item and offered as its attributes.
    Invariant: ``failing`` implies ``consecutive_failures > 0`` (a success clears both), so
    ``item_failures`` and ``ix_items_most_failures`` hold every failing item.

    The partial indexes hold only the rows their condition admits (the few failing or finished
    items): small, and a quiet poll's write changes no indexed column of the row.
    """

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("provider", "account", "kind", "ref", name="uq_items_identity"),
        # No index for counting items: `poller status`, the metrics and the capacity check read
        # the running counts of item_tallies (worker.store.tallies) and item_failures instead.
        # "The most failures first" (the dashboard) reads the end of this one only.
        Index("ix_items_most_failures", "consecutive_failures", **partial("consecutive_failures > 0")),
        # The prune's pick. Its query names the states as literals, as here: SQLite matches a
        # partial index's IN list only to literals, not to bound parameters.
        Index("ix_items_finished", "updated_at",
              **partial(f"state IN ({', '.join(repr(state) for state in FINISHED)})")),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(40))
    account: Mapped[str] = mapped_column(String(80), default="default")
    kind: Mapped[str] = mapped_column(String(40))
    ref: Mapped[str] = mapped_column(String(200))
    interval_s: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), default="active")
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(80))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The last per-item event sequence number handed out.
    event_seq: Mapped[int] = mapped_column(Integer, default=0)
    #: The provider's change marker (ETag) from the last successful poll, for conditional requests.
    version: Mapped[str | None] = mapped_column(String(200))
    #: worker.documents.document_digest of the latest snapshot (NULL: none yet, or written before
    #: migration 0016 and not polled since). A poll that finds the same digest changed nothing, and
    #: the chunk poller reads no snapshot for it.
    snapshot_digest: Mapped[str | None] = mapped_column(String(32))
    #: The client's own labels ({key: value}) and record id, copied into every event of the item.
    #: Labels are also rows of ``item_labels``, which the label filters use.
    labels: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When the item's record last changed (settings, state, status, failures); a quiet poll
    #: leaves it, as it leaves every indexed column (``last_polled_at`` says when it was polled).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Every item has one: joined with an inner join (cheaper, and PostgreSQL can lock both rows).
    schedule: Mapped[Schedule] = relationship(lazy="joined", innerjoin=True, cascade="all, delete-orphan",
                                              passive_deletes=True)

    def __init__(self, **fields: Any) -> None:
        """Columns as keywords, the schedule's among them; the schedule row is made alongside."""
        planned: dict[str, Any] = {"lease_id": 0, "claims_since_poll": 0}
        planned.update({name: fields.pop(name) for name in SCHEDULE_FIELDS if name in fields})
        super().__init__(**fields)
        self.schedule = Schedule(provider=self.provider, **planned)

    #: The schedule's columns, as attributes of the item (worker.store.schedule.OnSchedule).
    next_poll_at: OnSchedule[datetime | None] = OnSchedule()
    lease_id: OnSchedule[int] = OnSchedule()
    claims_since_poll: OnSchedule[int] = OnSchedule()
    due_since: OnSchedule[datetime | None] = OnSchedule()


class ItemLabel(Base):
    """One label of an item, for filtering (``label=key:value``) by index."""

    __tablename__ = "item_labels"
    __table_args__ = (Index("ix_item_labels_lookup", "key", "value", "item_id"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class ApiKey(Base):
    """A key of the HTTP API. Only its SHA-256 digest is stored: keys are 256 random bits, so a
    fast hash is enough (no password stretching), and a stolen table opens nothing."""

    __tablename__ = "api_keys"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    #: The key's first characters, to recognise it in `poller keys list` without storing it.
    prefix: Mapped[str] = mapped_column(String(20))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Snapshot(Base):
    """A normalized status document, stored only when it differs from the one before."""

    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_item_latest", "item_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(80))
    terminal: Mapped[bool] = mapped_column(Boolean)
    fields: Mapped[Any] = mapped_column(JSONDoc)
    raw: Mapped[Any] = mapped_column(JSONDoc, nullable=True)


class Event(Base):
    """A change event. ``position`` orders the stream; ``id`` is the public, stable id.

    Events outlive their item (untracking keeps history), so ``item_id`` has no foreign key.
    Provider-level events (``provider.paused``) belong to no item: ``item_id`` and ``seq`` are NULL.
    """

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("item_id", "seq", name="uq_events_item_seq"), {"sqlite_autoincrement": True})

    position: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    item_id: Mapped[int | None] = mapped_column(Integer, index=True)
    seq: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[Any] = mapped_column(JSONDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Subscription(Base):
    """Where events go: a webhook endpoint, or the SQL sink (``kind`` = ``sql``).

    ``event_types`` and ``providers`` are JSON lists, or NULL for "all". The webhook secret is a
    Standard Webhooks ``whsec_`` key; after a rotation the previous one keeps signing alongside the
    new one until ``previous_secret_expires_at``.
    """

    __tablename__ = "subscriptions"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="webhook")
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
    providers: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
    #: {key: value} the event's item must carry (all of them), or NULL for every item.
    labels: Mapped[Any] = mapped_column(JSONDoc, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    #: Both secrets are stored encrypted (worker.store.crypto).
    secret: Mapped[str | None] = mapped_column(EncryptedText)
    previous_secret: Mapped[str | None] = mapped_column(EncryptedText)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Start of the current run of failures without a success (auto-disable clock).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """One event to one subscription: the outbox row, written with the event.

    Invariant like items: ``next_attempt_at`` is NULL once the delivery succeeded or failed for
    good. A claim leaves it alone and sets ``leased_until`` one lease ahead instead (a delivery lost
    with a worker is retried when that passes): neither of those two is indexed, so a claim writes
    the row alone.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_due", "next_attempt_at"),
        Index("ix_deliveries_order", "subscription_id", "item_id", "event_position"),
        # The pending ones (`poller status`, the metrics, oldest first) and the counts by
        # subscription and state (the dashboard), from the index alone. Not (state, subscription_id):
        # without statistics PostgreSQL took that for the claim's chain check, which then read every
        # pending delivery of the subscription for each one (a 20,000-delivery claim: 107 s, not 1).
        Index("ix_deliveries_state", "state", "created_at", "subscription_id"),
        # The pending deliveries of each chain in order: the claim's "first pending of its chain"
        # and the followers behind it read this, one probe per chain (the claim spells the state
        # as a literal, which a partial index needs).
        Index("ix_deliveries_pending_chain", "subscription_id", "item_id", "event_position", "id",
              **partial("state = 'pending'")),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    event_position: Mapped[int] = mapped_column(ForeignKey("events.position", ondelete="CASCADE"), index=True)
    #: Copied from the event: deliveries of one item to one subscription go out in order.
    item_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_id: Mapped[int] = mapped_column(Integer, default=0)
    #: Until when the latest claim's worker has it (NULL: nobody has claimed it since it was due).
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeliveryAttempt(Base):
    """One try at a delivery: when, what came back, how long it took, whose fault a failure was."""

    __tablename__ = "delivery_attempts"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the prune's range
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    #: "subscriber" (their 3xx/4xx), "unavailable" (5xx, 429, timeout, connection) or null.
    fault: Mapped[str | None] = mapped_column(String(16))
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class Heartbeat(Base):
    """When a recurring job last ran (``dispatch``, ``deliver``): beat, broker and worker together."""

    __tablename__ = "heartbeats"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: How long that run took, in seconds.
    seconds: Mapped[float] = mapped_column(Float)
    #: How many items (or deliveries) it claimed.
    claimed: Mapped[int] = mapped_column(Integer)


class RetentionMark(Base):
    """How far a prune has removed a kind of history (``events``): a cursor from before it is
    refused with the oldest retained event named, never silently moved past the gap."""

    __tablename__ = "retention_marks"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    #: The highest stream position removed.
    position: Mapped[int] = mapped_column(BigId)
    #: The creation time of the newest event removed.
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ItemTally(Base):
    """A change in the count of items with one provider, account, state and interval (+1, -1, or
    a folded sum). Written by triggers on ``items`` (migration 0010), read by worker.store.tallies."""

    __tablename__ = "item_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(40))
    account: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(16))
    interval_s: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(BigInteger)


class DeliveryTally(Base):
    """A change in the count of one subscription's deliveries in one state; as ItemTally."""

    __tablename__ = "delivery_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(BigInteger)


class ItemFailure(Base):
    """An item that failed its latest polls, as its row in ``items`` says (only while
    ``consecutive_failures > 0``). Written by triggers on ``items`` (migration 0019), read by the
    failure counts (worker.store.health.failures): a few pages where ``items`` needs thousands."""

    __tablename__ = "item_failures"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))
    consecutive_failures: Mapped[int] = mapped_column(Integer)
    failing: Mapped[bool] = mapped_column(Boolean)
