"""Domain values shared by the pure core and the I/O shell."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JSON = Any


class EventType(enum.StrEnum):
    """The change-event types, dotted as in Standard Webhooks."""

    OBSERVED = "status.observed"
    CHANGED = "status.changed"
    GONE = "item.gone"
    FAILING = "poll.failing"
    RECOVERED = "poll.recovered"


#: Events about providers and subscriptions rather than items (``item_id`` is null).
SYSTEM_EVENT_TYPES = ("provider.paused", "provider.resumed", "provider.auth_failed", "provider.auth_recovered",
                      "provider.degraded", "provider.restored", "subscription.disabled")
#: Every event type a subscription can ask for.
ALL_EVENT_TYPES = tuple(t.value for t in EventType) + SYSTEM_EVENT_TYPES


class ItemState(enum.StrEnum):
    """Where a tracked item is in its polling life."""

    ACTIVE = "active"  #: polled on schedule
    TERMINAL = "terminal"  #: the provider reports a final status; no more polls
    PAUSED = "paused"  #: an operator paused it
    GONE = "gone"  #: the provider says it no longer exists


@dataclass(frozen=True)
class StatusDocument:
    """A provider response normalized to the fields that matter.

    Attributes:
        status: the main status, a short snake_case word (e.g. ``pending_delivery``, ``paid``).
        terminal: True when the item reached a final state and polling should stop.
        fields: the normalized fields that are diffed, a JSON object.
        raw: the provider's body as parsed JSON, kept verbatim for audit.
        version: the provider's change marker (ETag) when it has one.
    """

    status: str
    terminal: bool
    fields: dict[str, JSON]
    raw: JSON = None
    version: str | None = None


@dataclass(frozen=True)
class Change:
    """One changed leaf (or added/removed list element) between two snapshots."""

    path: str
    old: JSON
    new: JSON

    def to_dict(self) -> dict[str, JSON]:
        """The wire form used in event payloads: ``{path, from, to}``."""
        return {"path": self.path, "from": self.old, "to": self.new}


@dataclass(frozen=True)
class ItemRef:
    """What a poll needs to know about an item: where to ask and what to ask for."""

    id: int
    provider: str
    account: str
    kind: str
    ref: str
    #: The client's labels and record id, carried into the item's events.
    labels: dict[str, str] = field(default_factory=dict)
    external_id: str | None = None


@dataclass(frozen=True)
class PollState:
    """The item's polling bookkeeping before a poll, as the decision logic needs it."""

    interval_s: float
    consecutive_failures: int = 0
    failing: bool = False
    has_snapshot: bool = False


@dataclass(frozen=True)
class NewEvent:
    """An event to be written: type and data; the store assigns id, seq and time."""

    type: EventType
    data: dict[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True)
class PollOutcome:
    """What one poll decided: new snapshot (if any), events and the item's next schedule."""

    state: ItemState
    next_poll_at: datetime | None
    consecutive_failures: int
    failing: bool
    events: list[NewEvent]
    snapshot: StatusDocument | None = None
    error: str | None = None


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt (or sink write) produced."""

    status_code: int | None
    latency_ms: float
    excerpt: str | None = None
    error: str | None = None
    retry_after: float | None = None
    #: Our own policy refused to send (no request was made); the subscriber is not at fault.
    refused: bool = False

    @property
    def ok(self) -> bool:
        """2xx is success; nothing else is."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Decision:
    """The delivery's next state, and what happens to the subscription."""

    state: str  # "succeeded", "pending" (retry at next_attempt_at) or "failed"
    next_attempt_at: datetime | None
    outcome: str  # "success", "retry", "failed", "gone", "refused"
    fault: str | None  # "subscriber", "unavailable", "policy" or None
    disable_reason: str | None = None
    #: Whether the attempt uses up a step of the retry schedule (a refusal does not).
    counts: bool = True
