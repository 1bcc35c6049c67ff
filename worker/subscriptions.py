"""Managing subscriptions and the outbox, for the CLI and the HTTP API: add, change, rotate,
test, recover, replay, inspect."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.catalog import check_labels, decode_cursor, encode_cursor
from worker.clock import utcnow
from worker.dates import iso_z
from worker.delivery import redact
from worker.domain import ALL_EVENT_TYPES
from worker.errors import Conflict, InputError, NotFound, TargetRefused
from worker.ids import event_id as new_event_id
from worker.store import deliveries, tallies
from worker.store.db import get_or_raise
from worker.store.models import Delivery, DeliveryAttempt, Event, Subscription
from worker.webhooks import payload
from worker.webhooks.sender import WebhookSender
from worker.webhooks.urls import Resolver, check_url, resolve

#: The name the SQL sink's subscription row carries in ``url``.
SINK_URL = "sql-sink"
#: The ``data.message`` of a test event.
TEST_MESSAGE = "A test event from status-poller. It is outside every item's order and not in the event stream."


#: Stored filters: event types, providers, labels (None: all).
Filters = tuple[list[str] | None, list[str] | None, dict[str, str] | None]


class _Keep:
    """The type of ``KEEP``."""


#: "Leave this filter as it is" (``None`` clears a filter: every event).
KEEP = _Keep()


@dataclass(frozen=True)
class DeliveryView:
    """A delivery with its event and attempts, for `poller deliveries` and `GET /v1/deliveries`."""

    delivery: Delivery
    event: Event
    attempts: list[DeliveryAttempt]


@dataclass(frozen=True)
class PingResult:
    """What a test event's one attempt produced."""

    webhook_id: str
    ok: bool
    status_code: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str | None


def _get(session: Session, sub_id: int) -> Subscription:
    return get_or_raise(session, Subscription, sub_id, NotFound, f"no subscription has id {sub_id}")


class Subscriptions:
    """Subscription management. URL rules are the same as at delivery time.

    Args:
        sessions: the poller database.
        allow_http, allow_private: the webhook target rules (POLLER_WEBHOOK_ALLOW_*).
        known_providers: the provider names a filter may use.
        resolver: DNS, for the target check.
        clock: wall clock (UTC); it also stamps test events.
        sender: posts test events (a default one when None).
        entropy: randomness for test event ids.
    """

    def __init__(
        self, sessions: sessionmaker[Session], *, allow_http: bool, allow_private: bool,
        known_providers: tuple[str, ...], resolver: Resolver = resolve, clock: Callable[[], datetime] = utcnow,
        sender: WebhookSender | None = None, entropy: Callable[[int], bytes] = os.urandom,
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions, self.allow_http, self.allow_private = sessions, allow_http, allow_private
        #: Sessions for what only reads (lists and pages); read-only ones take no write lock.
        self.reads = reads or sessions
        self.known_providers, self.resolver, self.clock = known_providers, resolver, clock
        self._sender, self.entropy = sender, entropy

    @property
    def sender(self) -> WebhookSender:
        """The sender of test events, made on first use (the CLI never needs one)."""
        if self._sender is None:
            self._sender = WebhookSender()
        return self._sender

    def check_url(self, url: str) -> list[str]:
        """The addresses ``url`` was checked at, or the InputError (naming ``url``) delivery would give."""
        try:
            return check_url(url, allow_http=self.allow_http, allow_private=self.allow_private, resolver=self.resolver)
        except InputError as err:
            err.field = "url"  # kept as raised: a TargetRefused still names the setting
            raise

    def check_filters(self, types: Sequence[str] | None, providers: Sequence[str] | None,
                      labels: dict[str, Any] | None) -> Filters:
        """The filters as stored (empty means all: None), or an InputError naming the one at fault."""
        for t in types or []:
            if t not in ALL_EVENT_TYPES:
                raise InputError(f"unknown event type {t!r}; known: {', '.join(ALL_EVENT_TYPES)}", field="types")
        for p in providers or []:
            if p not in self.known_providers:
                raise InputError(f"unknown provider {p!r}; known: {', '.join(self.known_providers)}",
                                 field="providers")
        checked = check_labels(labels) if labels else None
        return list(dict.fromkeys(types or [])) or None, list(dict.fromkeys(providers or [])) or None, checked

    def add(self, url: str, *, types: list[str] | None = None, providers: list[str] | None = None,
            labels: dict[str, str] | None = None) -> tuple[Subscription, str]:
        """A new webhook subscription and its secret (shown once).

        Raises:
            InputError: a refused URL, an unknown event type or provider, a bad label.
            Conflict: a subscription with the same URL and filters (it would get every event twice).
        """
        self.check_url(url)
        types, providers, labels = self.check_filters(types, providers, labels)
        secret = payload.new_secret()
        with self.sessions.begin() as session:
            same = deliveries.find_same_subscription(session, url, event_types=types, providers=providers,
                                                     labels=labels)
            if same is not None:
                raise _duplicate(same, labelled=bool(labels))
            sub = deliveries.add_subscription(session, kind="webhook", url=url, secret=secret, event_types=types,
                                        providers=providers, labels=labels, now=self.clock())
        return sub, secret

    def ensure_sink(self) -> Subscription:
        """The SQL sink's subscription (all events), created once."""
        with self.sessions.begin() as session:
            sub = session.scalar(select(Subscription).where(Subscription.kind == "sql"))
            if sub is None:
                sub = deliveries.add_subscription(session, kind="sql", url=SINK_URL, secret=None, event_types=None,
                                            providers=None, now=self.clock())
            return sub

    def all(self) -> list[tuple[Subscription, dict[str, int]]]:
        """Every subscription with its deliveries counted by state."""
        with self.reads.begin() as session:
            counts = tallies.delivery_counts(session)
            return [(s, counts.get(s.id, {})) for s in deliveries.list_subscriptions(session)]

    def get(self, sub_id: int) -> tuple[Subscription, dict[str, int]]:
        """One subscription with its deliveries counted by state (NotFound when none has the id)."""
        with self.reads.begin() as session:
            sub = _get(session, sub_id)
            return sub, tallies.delivery_counts(session, sub_id).get(sub_id, {})

    def change(self, sub_id: int, *, url: str | None = None, types: list[str] | None | _Keep = KEEP,
               providers: list[str] | None | _Keep = KEEP, labels: dict[str, str] | None | _Keep = KEEP,
               enabled: bool | None = None) -> Subscription:
        """Change a subscription's URL or filters (``None`` clears one; for events from now on:
        what is queued stays), or disable or enable it (see ``set_enabled``).

        Raises:
            NotFound: no subscription has the id.
            InputError: as for ``add``.
            Conflict: another subscription has the same URL and filters, or a new URL for the SQL sink.
        """
        if url is not None:
            self.check_url(url)
        given = self.check_filters(None if isinstance(types, _Keep) else types,
                                   None if isinstance(providers, _Keep) else providers,
                                   None if isinstance(labels, _Keep) else labels)
        now = self.clock()
        with self.sessions.begin() as session:
            sub = _get(session, sub_id)
            if url is not None and sub.kind != "webhook":
                raise Conflict(f"subscription {sub_id} is the SQL sink; its URL cannot change", field="url")
            new_url = sub.url if url is None else url
            new_types = sub.event_types if isinstance(types, _Keep) else given[0]
            new_providers = sub.providers if isinstance(providers, _Keep) else given[1]
            new_labels = sub.labels if isinstance(labels, _Keep) else given[2]
            if sub.kind == "webhook":
                same = deliveries.find_same_subscription(session, new_url, event_types=new_types,
                                                         providers=new_providers, labels=new_labels,
                                                         other_than=sub.id)
                if same is not None:
                    raise _duplicate(same, labelled=bool(new_labels))
            sub.url, sub.event_types, sub.providers, sub.labels = new_url, new_types, new_providers, new_labels
            if enabled is not None and enabled != (sub.state == "active"):
                self._set_state(session, sub, enabled, now)
            sub.updated_at = now
            return sub

    def set_enabled(self, sub_id: int, enabled: bool) -> Subscription:
        """Disable (deliveries wait, nothing is dropped) or enable again: the failure clock restarts
        and what waits is due at once (in order), not at the end of its retry delay."""
        with self.sessions.begin() as session:
            sub = _get(session, sub_id)
            self._set_state(session, sub, enabled, self.clock())
            return sub

    def _set_state(self, session: Session, sub: Subscription, enabled: bool, now: datetime) -> None:
        sub.state = "active" if enabled else "disabled"
        sub.disabled_reason = None if enabled else "disabled by an operator"
        if enabled:
            sub.failing_since = None
            # An operator enabling a subscription (often after fixing a setting) wants it tried now.
            session.execute(update(Delivery).where(Delivery.subscription_id == sub.id, Delivery.state == "pending",
                                                   Delivery.next_attempt_at > now)
                            .values(next_attempt_at=now, updated_at=now)
                            .execution_options(synchronize_session=False))
        sub.updated_at = now

    def remove(self, sub_id: int) -> None:
        """Delete a subscription with its pending deliveries and attempt history."""
        with self.sessions.begin() as session:
            _get(session, sub_id)
            session.execute(delete(Subscription).where(Subscription.id == sub_id))

    def rotate_secret(self, sub_id: int, grace: timedelta) -> str:
        """A new secret; the old one keeps signing alongside it for ``grace`` (several signatures)."""
        with self.sessions.begin() as session:
            sub = _get(session, sub_id)
            if sub.kind != "webhook":
                raise Conflict(f"subscription {sub_id} is a {sub.kind} sink and has no secret")
            new = payload.new_secret()
            sub.previous_secret, sub.previous_secret_expires_at = sub.secret, self.clock() + grace
            sub.secret, sub.updated_at = new, self.clock()
            return new

    def send_test(self, sub_id: int) -> PingResult:
        """Send a signed ``test`` event to the subscription now, once, with the same URL rules,
        signatures and sender as deliveries. It is in no item's order, not stored and not retried;
        the subscription's health is unchanged.

        Raises:
            NotFound: no subscription has the id.
            Conflict: the SQL sink, or a URL our policy refuses now (naming ``url``).
        """
        now = self.clock()
        with self.sessions.begin() as session:
            sub = _get(session, sub_id)
            if sub.kind != "webhook":
                raise Conflict(f"subscription {sub_id} is the SQL sink; only webhooks can be tested")
            url, secrets = sub.url, deliveries.active_secrets(sub, now)
        webhook_id = new_event_id(now, self.entropy(10))
        try:
            addresses = self.check_url(url)
        except TargetRefused as err:
            raise Conflict(f"not sent: {err}", field="url") from None
        except InputError as err:  # DNS: the receiver's side, as for a delivery
            return PingResult(webhook_id, False, None, 0.0, f"not sent: {err}", None)
        if not addresses:
            return PingResult(webhook_id, False, None, 0.0,
                              f"not sent: webhook host of {redact(url)} does not resolve", None)
        body = payload.body(webhook_id, "test", now, {"subscription_id": sub_id, "message": TEST_MESSAGE},
                            item_id=None, seq=None)
        result = self.sender.post(url, body, payload.headers(webhook_id, now, body, secrets), addresses=addresses)
        return PingResult(webhook_id, result.ok, result.status_code, round(result.latency_ms, 3), result.error,
                          result.excerpt)

    def recover(self, sub_id: int, since: datetime) -> int:
        """Send again, in event order and with the same ``webhook-id``, what failed for good to this
        subscription for events created since ``since`` (Svix's "recover failed since"). An event
        delivered since (a redelivery) is not sent again; one already queued again is made due now.

        Returns:
            How many deliveries were queued or moved up.
        """
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        with self.sessions.begin() as session:
            _get(session, sub_id)
            mine = select(Delivery.event_position).where(Delivery.subscription_id == sub_id)
            events = session.scalars(select(Event).where(
                Event.created_at >= since, Event.position.in_(mine.where(Delivery.state == "failed")),
                Event.position.not_in(mine.where(Delivery.state == "succeeded"))).order_by(Event.position)).all()
            return deliveries.redeliver(session, events, subscription_id=sub_id, now=self.clock())

    def replay(self, since: datetime, subscription_id: int | None = None) -> int:
        """Send again every event created since ``since`` (same ``webhook-id``)."""
        with self.sessions.begin() as session:
            events = session.scalars(select(Event).where(Event.created_at >= since).order_by(Event.position)).all()
            return deliveries.redeliver(session, events, subscription_id=subscription_id, now=self.clock())

    def redeliver(self, event_id: str, subscription_id: int | None = None) -> int:
        """Send one event again."""
        with self.sessions.begin() as session:
            event = session.scalar(select(Event).where(Event.id == event_id))
            if event is None:
                raise InputError(f"no event has id {event_id!r}")
            return deliveries.redeliver(session, [event], subscription_id=subscription_id, now=self.clock())

    def deliveries(self, *, event_id: str | None = None, subscription_id: int | None = None,
                   failed: bool = False, limit: int = 200) -> list[DeliveryView]:
        """Deliveries (newest first) with their attempts."""
        return self.delivery_page(event_id=event_id, subscription_id=subscription_id,
                                  status="failed" if failed else None, limit=limit)[0]

    def delivery_page(self, *, event_id: str | None = None, subscription_id: int | None = None,
                      status: str | None = None, cursor: str | None = None,
                      limit: int = 100) -> tuple[list[DeliveryView], str | None]:
        """A page of deliveries, newest first, with their attempts, and the cursor of the next
        (older) page. Filters are named as the API's query parameters in errors."""
        before = decode_cursor("deliveries", cursor) if cursor else None
        if status is not None and status not in deliveries.DELIVERY_STATES:
            raise InputError(f"status must be one of {', '.join(deliveries.DELIVERY_STATES)}, got {status!r}",
                             field="status")
        with self.reads.begin() as session:
            q = select(Delivery, Event).join(Event, Event.position == Delivery.event_position)
            if event_id is not None:
                position = session.scalar(select(Event.position).where(Event.id == event_id))
                if position is None:
                    raise InputError(f"no event has id {event_id!r}", field="event_id")
                q = q.where(Delivery.event_position == position)
            if subscription_id is not None:
                if session.get(Subscription, subscription_id) is None:
                    raise InputError(f"no subscription has id {subscription_id}", field="subscription_id")
                q = q.where(Delivery.subscription_id == subscription_id)
            if status is not None:
                q = q.where(Delivery.state == status)
            if before is not None:
                q = q.where(Delivery.id < before)
            rows = session.execute(q.order_by(Delivery.id.desc()).limit(limit + 1)).all()
            more, rows = len(rows) > limit, rows[:limit]
            attempts: dict[int, list[DeliveryAttempt]] = {}
            for a in session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(
                    [d.id for d, _ in rows])).order_by(DeliveryAttempt.id)):
                attempts.setdefault(a.delivery_id, []).append(a)
            views = [DeliveryView(d, e, attempts.get(d.id, [])) for d, e in rows]
        return views, encode_cursor("deliveries", views[-1].delivery.id) if more else None


def _duplicate(same: Subscription, *, labelled: bool) -> Conflict:
    hint = (f"it is disabled: `poller webhooks enable {same.id}`" if same.state != "active"
            else f"remove it first (`poller webhooks remove {same.id}`) to replace it")
    what = "same event types, providers and labels" if labelled else "same event types and providers"
    return Conflict(f"subscription {same.id} already sends the same events to this URL ({what}); {hint}", field="url")


def subscription_dict(sub: Subscription, counts: dict[str, int]) -> dict[str, Any]:
    """A subscription as JSON, without its secrets."""
    return {"id": sub.id, "kind": sub.kind, "url": sub.url, "state": sub.state, "disabled_reason": sub.disabled_reason,
            "event_types": sub.event_types, "providers": sub.providers, "labels": sub.labels,
            "last_success_at": iso_z(sub.last_success_at), "failing_since": iso_z(sub.failing_since),
            "previous_secret_expires_at": iso_z(sub.previous_secret_expires_at),
            "created_at": iso_z(sub.created_at), "updated_at": iso_z(sub.updated_at), "deliveries": counts}


def delivery_dict(view: DeliveryView) -> dict[str, Any]:
    """A delivery as JSON, with every attempt (oldest first)."""
    d = view.delivery
    return {"id": d.id, "event_id": view.event.id, "event_type": view.event.type,
            "subscription_id": d.subscription_id, "item_id": d.item_id, "state": d.state, "attempt_count": d.attempts,
            "next_attempt_at": iso_z(d.next_attempt_at), "last_status_code": d.last_status_code,
            "last_error": d.last_error, "created_at": iso_z(d.created_at), "updated_at": iso_z(d.updated_at),
            "finished_at": iso_z(d.finished_at),
            "attempts": [{"id": a.id, "attempted_at": iso_z(a.attempted_at), "status_code": a.status_code,
                          "latency_ms": a.latency_ms, "outcome": a.outcome, "fault": a.fault,
                          "response_excerpt": a.response_excerpt, "error": a.error} for a in view.attempts]}
