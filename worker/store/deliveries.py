"""Repository functions for subscriptions and the delivery outbox. Take a Session, never commit."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from worker.domain import AttemptResult, Decision
from worker.errors import Conflict, InputError
from worker.store.db import get_or_raise
from worker.store.delivery_claims import DeliveryClaim
from worker.store.models import Delivery, DeliveryAttempt, Event, Subscription


@dataclass(frozen=True)
class DeliveryWork:
    """Everything one attempt needs, read before any HTTP call."""

    claim: DeliveryClaim
    attempts: int
    subscription_id: int
    kind: str
    url: str
    secrets: list[str]
    event_id: str
    event_type: str
    event_created_at: datetime
    event_data: dict[str, Any]
    item_id: int | None
    seq: int | None


#: The states of a delivery: waiting (or retrying), delivered, given up after the last retry.
DELIVERY_STATES = ("pending", "succeeded", "failed")


def matches(sub: Subscription, event_type: str, provider: str | None, labels: Mapping[str, Any] | None) -> bool:
    """Whether ``sub`` wants an event of this type, provider and item labels (NULL filters mean
    everything). A label filter needs every key:value on the event's item, so events of no item
    (no labels) never match one."""
    if sub.event_types and event_type not in sub.event_types:
        return False
    if sub.providers and provider not in sub.providers:
        return False
    if sub.labels:
        have = labels if isinstance(labels, Mapping) else {}
        return all(have.get(key) == value for key, value in sub.labels.items())
    return True


def wants(sub: Subscription, event: Event) -> bool:
    """``matches`` with what the event carries in ``data`` (its labels as they were when it happened)."""
    data = event.data if isinstance(event.data, dict) else {}
    return matches(sub, event.type, data.get("provider"), data.get("labels"))


def enqueue_deliveries(session: Session, events: Sequence[Event], *, now: datetime) -> int:
    """The outbox: one delivery per matching active subscription, in the events' transaction."""
    if not events:
        return 0
    subs = session.scalars(select(Subscription).where(Subscription.state == "active")).all()
    return _add_deliveries(session, events, subs, now=now)


def _add_deliveries(session: Session, events: Sequence[Event], subs: Sequence[Subscription], *,
                    now: datetime, skip: Collection[tuple[int, int]] = ()) -> int:
    """One pending delivery per event and matching subscription, due now (none for the
    ``(subscription id, event position)`` pairs in ``skip``)."""
    rows = [Delivery(subscription_id=sub.id, event_position=ev.position, item_id=ev.item_id, state="pending",
                     attempts=0, next_attempt_at=now, lease_id=0, created_at=now, updated_at=now)
            for ev in events for sub in subs
            if (sub.id, ev.position) not in skip and wants(sub, ev)]
    session.add_all(rows)
    return len(rows)


def load_work(session: Session, claims: Sequence[DeliveryClaim], *, now: datetime) -> list[DeliveryWork]:
    """The claimed deliveries still under their lease, with event and subscription, in event order.

    A delivery whose lease went to a newer claim is with another worker now; the rest of its item's
    chain is dropped from this batch too (left for a later claim), or it could overtake it.
    """
    if not claims:
        return []
    leases = {c.delivery_id: c.lease_id for c in claims}
    rows = session.execute(
        select(Delivery, Event, Subscription)
        .join(Event, Event.position == Delivery.event_position)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(Delivery.id.in_(leases))).all()
    work = []
    taken: set[tuple[int, int]] = set()  # (subscription, item) whose earlier delivery another claim holds
    for delivery, event, sub in sorted(rows, key=lambda r: (r[0].event_position, r[0].id)):
        pair = (delivery.subscription_id, delivery.item_id if delivery.item_id is not None else -delivery.id)
        if delivery.state != "pending":
            continue  # settled meanwhile; what follows it may go
        if delivery.lease_id != leases[delivery.id] or pair in taken:
            taken.add(pair)
            continue
        work.append(DeliveryWork(
            DeliveryClaim(delivery.id, delivery.lease_id), delivery.attempts, sub.id, sub.kind, sub.url,
            active_secrets(sub, now), event.id, event.type, event.created_at, event.data, event.item_id, event.seq))
    return work


def release(session: Session, work: DeliveryWork, *, due: datetime, now: datetime) -> None:
    """Give back a claimed delivery without an attempt: an earlier event of its item just failed,
    so it is due again with that event's retry (and stays blocked until that one is settled)."""
    session.execute(update(Delivery).where(Delivery.id == work.claim.delivery_id,
                                           Delivery.lease_id == work.claim.lease_id)
                    .values(next_attempt_at=due, leased_until=None, updated_at=now)
                    .execution_options(synchronize_session=False))


def active_secrets(sub: Subscription, now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its grace period."""
    secrets = [sub.secret] if sub.secret else []
    if sub.previous_secret and sub.previous_secret_expires_at and sub.previous_secret_expires_at > now:
        secrets.append(sub.previous_secret)
    return secrets


def record_batch(
    session: Session, outcomes: Sequence[tuple[DeliveryWork, AttemptResult, Decision]], *, now: datetime,
    excerpt_chars: int,
) -> list[tuple[DeliveryWork, AttemptResult, Decision]]:
    """Store attempts and the deliveries' new states for those whose lease still holds.

    Three statements for the whole batch (lease check, executemany UPDATE, bulk INSERT): per-row
    ORM updates were most of a delivery's database time.

    Returns:
        The outcomes that were recorded (the others lost their lease to a newer claim).
    """
    if not outcomes:
        return []
    leases = {w.claim.delivery_id: w.claim.lease_id for w, _, _ in outcomes}
    # Locked until commit, so no re-claim can slip in between this check and the update (a claim
    # skips locked rows; SQLite's BEGIN IMMEDIATE serializes anyway).
    current = {row.id for row in session.execute(
        select(Delivery.id, Delivery.lease_id).where(Delivery.id.in_(leases)).with_for_update())
        if row.lease_id == leases[row.id]}
    kept = [o for o in outcomes if o[0].claim.delivery_id in current]
    if not kept:
        return []
    table = Delivery.metadata.tables["deliveries"]
    session.execute(
        update(table).where(table.c.id == bindparam("b_id"), table.c.lease_id == bindparam("b_lease")),
        [{"b_id": w.claim.delivery_id, "b_lease": w.claim.lease_id, "state": d.state, "attempts": w.attempts + d.counts,
          "next_attempt_at": d.next_attempt_at, "leased_until": None, "last_status_code": r.status_code,
          "last_error": r.error,
          "updated_at": now, "finished_at": None if d.state == "pending" else now} for w, r, d in kept])
    repeated = _repeated_refusals(session, [w.claim.delivery_id for w, _, d in kept if d.outcome == "refused"])
    attempts = DeliveryAttempt.metadata.tables["delivery_attempts"]
    if repeated:
        # A refusal by our own policy is retried every minute until someone acts: one row for the
        # run, kept current, rather than a row a minute for as long as it lasts.
        session.execute(update(attempts).where(attempts.c.id == bindparam("b_id")), [
            {"b_id": repeated[w.claim.delivery_id], "attempted_at": now, "error": r.error}
            for w, r, _ in kept if w.claim.delivery_id in repeated])
    fresh = [(w, r, d) for w, r, d in kept if w.claim.delivery_id not in repeated]
    if fresh:
        session.execute(insert(attempts), [
            {"delivery_id": w.claim.delivery_id, "attempted_at": now, "status_code": r.status_code,
             "latency_ms": round(r.latency_ms, 3), "outcome": d.outcome, "fault": d.fault,
             "response_excerpt": (r.excerpt or "")[:excerpt_chars] or None, "error": r.error} for w, r, d in fresh])
    return kept


def _repeated_refusals(session: Session, delivery_ids: list[int]) -> dict[int, int]:
    """For deliveries refused again: delivery id -> its latest attempt's id, where that was a refusal too."""
    if not delivery_ids:
        return {}
    latest = (select(func.max(DeliveryAttempt.id)).where(DeliveryAttempt.delivery_id.in_(delivery_ids))
              .group_by(DeliveryAttempt.delivery_id))
    return {row.delivery_id: row.id for row in session.execute(
        select(DeliveryAttempt.id, DeliveryAttempt.delivery_id, DeliveryAttempt.outcome)
        .where(DeliveryAttempt.id.in_(latest))) if row.outcome == "refused"}


# -- subscriptions -------------------------------------------------------------------------

def add_subscription(
    session: Session, *, kind: str, url: str, secret: str | None, event_types: list[str] | None,
    providers: list[str] | None, now: datetime, labels: dict[str, str] | None = None,
) -> Subscription:
    """A new active subscription."""
    sub = Subscription(kind=kind, url=url, secret=secret, event_types=event_types or None,
                       providers=providers or None, labels=labels or None, state="active", created_at=now,
                       updated_at=now)
    session.add(sub)
    session.flush()
    return sub


def same_url(a: str, b: str) -> bool:
    """Whether two webhook URLs name the same endpoint: scheme and host case, a default port and
    an empty path do not make a difference; path and query do."""
    def key(url: str) -> tuple[str, str, int | None, str, str]:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        if port == {"http": 80, "https": 443}.get(scheme):
            port = None
        return scheme, (parts.hostname or "").lower(), port, parts.path or "/", parts.query

    return key(a) == key(b)


def find_same_subscription(session: Session, url: str, *, event_types: list[str] | None,
                           providers: list[str] | None, labels: dict[str, str] | None = None,
                           other_than: int | None = None) -> Subscription | None:
    """A webhook subscription (active or not, other than ``other_than``) with the same URL and the
    same filters, compared as sets (none means all): a second one would receive every event twice."""
    def filters(types: list[str] | None, provs: list[str] | None, labs: dict[str, str] | None) -> tuple[Any, ...]:
        return frozenset(types or ()), frozenset(provs or ()), frozenset((labs or {}).items())

    want = filters(event_types, providers, labels)
    for sub in session.scalars(select(Subscription).where(Subscription.kind == "webhook").order_by(Subscription.id)):
        if sub.id != other_than and same_url(sub.url, url) and filters(sub.event_types, sub.providers,
                                                                       sub.labels) == want:
            return sub
    return None


def get_subscription(session: Session, sub_id: int) -> Subscription:
    """The subscription, or InputError."""
    return get_or_raise(session, Subscription, sub_id, InputError, f"no subscription has id {sub_id}")


def list_subscriptions(session: Session) -> Sequence[Subscription]:
    """All subscriptions by id."""
    return session.scalars(select(Subscription).order_by(Subscription.id)).all()


def redeliver(
    session: Session, events: Sequence[Event], *, subscription_id: int | None, now: datetime,
) -> int:
    """Send already-sent events again (same event id, so the same ``webhook-id``), in item order.

    An event that still waits for a subscription (retry backoff) is not queued twice: its delivery
    is made due now (one a worker is sending right now is left to that attempt). What waits behind
    the re-sent events of the same item is made due now too, so the item's chain goes out at once
    and in order, instead of the later events trailing behind an old retry time.

    Returns:
        How many deliveries were queued or moved up.
    """
    subs = session.scalars(select(Subscription).where(Subscription.state == "active")).all()
    if subscription_id is not None:
        subs = [s for s in subs if s.id == subscription_id]
        if not subs:
            get_subscription(session, subscription_id)
            raise Conflict(f"subscription {subscription_id} is disabled; enable it first")
    if not events or not subs:
        return 0
    waiting = session.scalars(select(Delivery).where(
        Delivery.state == "pending", Delivery.subscription_id.in_([s.id for s in subs]),
        Delivery.event_position >= min(ev.position for ev in events))).all()
    resent: set[tuple[int, int]] = set()  # (subscription, event position)
    chain_from: dict[tuple[int, int], int] = {}  # (subscription, item) -> first re-sent position
    for sub in subs:
        for ev in events:
            if wants(sub, ev):
                resent.add((sub.id, ev.position))
                if ev.item_id is not None:
                    key = (sub.id, ev.item_id)
                    chain_from[key] = min(chain_from.get(key, ev.position), ev.position)
    already = {(d.subscription_id, d.event_position) for d in waiting}
    for d in waiting:
        start = chain_from.get((d.subscription_id, d.item_id)) if d.item_id is not None else None
        in_chain = start is not None and d.event_position >= start
        if (in_chain or (d.subscription_id, d.event_position) in resent) and (
                d.next_attempt_at is None or d.next_attempt_at > now):
            d.next_attempt_at, d.updated_at = now, now
    return len(resent & already) + _add_deliveries(session, events, subs, now=now, skip=already)
