"""Managing subscriptions and the outbox from the CLI: add, rotate, replay, inspect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.domain import ALL_EVENT_TYPES
from worker.errors import InputError
from worker.providers.base import utcnow
from worker.store import deliveries as repo
from worker.store.models import Delivery, DeliveryAttempt, Event, Subscription
from worker.webhooks import payload
from worker.webhooks.urls import Resolver, check_url, resolve

#: The name the SQL sink's subscription row carries in ``url``.
SINK_URL = "sql-sink"


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its event and attempts, for `poller deliveries`."""

    delivery: Delivery
    event: Event
    attempts: list[DeliveryAttempt]


class Subscriptions:
    """Subscription management. URL rules are the same as at delivery time."""

    def __init__(
        self, sessions: sessionmaker[Session], *, allow_http: bool, allow_private: bool,
        known_providers: tuple[str, ...], resolver: Resolver = resolve, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions, self.allow_http, self.allow_private = sessions, allow_http, allow_private
        self.known_providers, self.resolver, self.clock = known_providers, resolver, clock

    def add(self, url: str, *, types: list[str] | None = None,
            providers: list[str] | None = None) -> tuple[Subscription, str]:
        """A new webhook subscription and its secret (shown once).

        Raises:
            InputError: a refused URL, an unknown event type or provider, or a subscription with
                the same URL and filters (it would get every event twice).
        """
        check_url(url, allow_http=self.allow_http, allow_private=self.allow_private, resolver=self.resolver)
        for t in types or []:
            if t not in ALL_EVENT_TYPES:
                raise InputError(f"unknown event type {t!r}; known: {', '.join(ALL_EVENT_TYPES)}")
        for p in providers or []:
            if p not in self.known_providers:
                raise InputError(f"unknown provider {p!r}; known: {', '.join(self.known_providers)}")
        secret = payload.new_secret()
        with self.sessions.begin() as session:
            same = repo.find_same_subscription(session, url, event_types=types, providers=providers)
            if same is not None:
                hint = (f"it is disabled: `poller webhooks enable {same.id}`" if same.state != "active"
                        else f"remove it first (`poller webhooks remove {same.id}`) to replace it")
                raise InputError(f"subscription {same.id} already sends the same events to this URL "
                                 f"(same event types and providers); {hint}")
            sub = repo.add_subscription(session, kind="webhook", url=url, secret=secret, event_types=types,
                                        providers=providers, now=self.clock())
        return sub, secret

    def ensure_sink(self) -> Subscription:
        """The SQL sink's subscription (all events), created once."""
        with self.sessions.begin() as session:
            sub = session.scalar(select(Subscription).where(Subscription.kind == "sql"))
            if sub is None:
                sub = repo.add_subscription(session, kind="sql", url=SINK_URL, secret=None, event_types=None,
                                            providers=None, now=self.clock())
            return sub

    def all(self) -> list[tuple[Subscription, dict[str, int]]]:
        """Every subscription with its deliveries counted by state."""
        with self.sessions.begin() as session:
            counts = repo.delivery_counts(session)
            return [(s, counts.get(s.id, {})) for s in repo.list_subscriptions(session)]

    def set_enabled(self, sub_id: int, enabled: bool) -> Subscription:
        """Disable (deliveries wait, nothing is dropped) or enable again: the failure clock restarts
        and what waits is due at once (in order), not at the end of its retry delay."""
        with self.sessions.begin() as session:
            sub = repo.get_subscription(session, sub_id)
            now = self.clock()
            sub.state = "active" if enabled else "disabled"
            sub.disabled_reason = None if enabled else "disabled by an operator"
            if enabled:
                sub.failing_since = None
                # An operator enabling a subscription (often after fixing a setting) wants it tried now.
                session.execute(update(Delivery).where(Delivery.subscription_id == sub_id, Delivery.state == "pending",
                                                       Delivery.next_attempt_at > now)
                                .values(next_attempt_at=now, updated_at=now)
                                .execution_options(synchronize_session=False))
            sub.updated_at = now
            return sub

    def remove(self, sub_id: int) -> None:
        """Delete a subscription with its pending deliveries and attempt history."""
        with self.sessions.begin() as session:
            repo.get_subscription(session, sub_id)
            session.execute(delete(Subscription).where(Subscription.id == sub_id))

    def rotate_secret(self, sub_id: int, grace: timedelta) -> str:
        """A new secret; the old one keeps signing alongside it for ``grace`` (several signatures)."""
        with self.sessions.begin() as session:
            sub = repo.get_subscription(session, sub_id)
            if sub.kind != "webhook":
                raise InputError(f"subscription {sub_id} is a {sub.kind} sink and has no secret")
            new = payload.new_secret()
            sub.previous_secret, sub.previous_secret_expires_at = sub.secret, self.clock() + grace
            sub.secret, sub.updated_at = new, self.clock()
            return new

    def replay(self, since: datetime, subscription_id: int | None = None) -> int:
        """Send again every event created since ``since`` (same ``webhook-id``)."""
        with self.sessions.begin() as session:
            events = session.scalars(select(Event).where(Event.created_at >= since).order_by(Event.position)).all()
            return repo.redeliver(session, events, subscription_id=subscription_id, now=self.clock())

    def redeliver(self, event_id: str, subscription_id: int | None = None) -> int:
        """Send one event again."""
        with self.sessions.begin() as session:
            event = session.scalar(select(Event).where(Event.id == event_id))
            if event is None:
                raise InputError(f"no event has id {event_id!r}")
            return repo.redeliver(session, [event], subscription_id=subscription_id, now=self.clock())

    def deliveries(self, *, event_id: str | None = None, subscription_id: int | None = None,
                   failed: bool = False, limit: int = 200) -> list[DeliveryView]:
        """Deliveries (newest first) with their attempts."""
        with self.sessions.begin() as session:
            q = select(Delivery, Event).join(Event, Event.position == Delivery.event_position)
            if event_id:
                q = q.where(Event.id == event_id)
            if subscription_id is not None:
                q = q.where(Delivery.subscription_id == subscription_id)
            if failed:
                q = q.where(Delivery.state == "failed")
            rows = session.execute(q.order_by(Delivery.id.desc()).limit(limit)).all()
            attempts: dict[int, list[DeliveryAttempt]] = {}
            ids = [d.id for d, _ in rows]
            for a in session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ids))
                                     .order_by(DeliveryAttempt.id)):
                attempts.setdefault(a.delivery_id, []).append(a)
            return [DeliveryView(d, e, attempts.get(d.id, [])) for d, e in rows]


def subscription_dict(sub: Subscription, counts: dict[str, int]) -> dict[str, Any]:
    """A subscription as JSON, without its secrets."""
    return {"id": sub.id, "kind": sub.kind, "url": sub.url, "state": sub.state, "disabled_reason": sub.disabled_reason,
            "event_types": sub.event_types, "providers": sub.providers,
            "last_success_at": sub.last_success_at.isoformat() if sub.last_success_at else None,
            "failing_since": sub.failing_since.isoformat() if sub.failing_since else None,
            "deliveries": counts}
