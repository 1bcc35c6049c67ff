"""Claiming due deliveries (issue 9's order, issue 13's scale). Takes a Session, never commits.

A claim takes the first pending delivery of each chain (one item's deliveries to one subscription,
in event order) that is due and not held by another worker, and the due deliveries queued right
behind it, so a burst of changes goes out in one batch, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, literal_column, or_, select, text, tuple_, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

from worker.store.models import Delivery, Subscription

#: "pending" spelled out in the SQL, as the partial index ix_deliveries_pending_chain needs.
PENDING: ColumnElement[str] = literal_column("'pending'")
#: Bound values per statement, within every driver's limit (PostgreSQL 65,535, a stock SQLite 32,766).
PARAMS_PER_QUERY = 5000


@dataclass(frozen=True)
class DeliveryClaim:
    """A delivery handed to a worker, with the lease that entitles it to record the result."""

    delivery_id: int
    lease_id: int
    #: (subscription, item) of a claim fresh from ``claim_due``: one chain must go out in one
    #: batch, or a follower in another batch could overtake its head. Not part of the identity.
    chain: tuple[int, int] | None = field(default=None, compare=False)


def claim_due(session: Session, *, now: datetime, lease_s: float, limit: int) -> list[DeliveryClaim]:
    """Claim due deliveries of active subscriptions, oldest first, one lease ahead.

    One item's deliveries to one subscription form a chain in event order (ties, such as a
    redelivery next to a waiting copy, by delivery id). Only the first pending delivery of a chain
    can be claimed on its own; the others wait until it is settled, even while it sits in retry
    backoff, so one item's events arrive in order. Other items are not held up.
    """
    earlier = aliased(Delivery)
    blocked = (select(earlier.id).where(
        earlier.subscription_id == Delivery.subscription_id, earlier.item_id == Delivery.item_id,
        earlier.state == PENDING,
        or_(earlier.event_position < Delivery.event_position,
            and_(earlier.event_position == Delivery.event_position, earlier.id < Delivery.id))).exists())
    due = (select(Delivery.id).join(Subscription, Subscription.id == Delivery.subscription_id)
           .where(Delivery.next_attempt_at <= now, _unleased(now), Subscription.state == "active", ~blocked)
           .order_by(Delivery.next_attempt_at, Delivery.id).limit(limit))
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        due = due.with_for_update(skip_locked=True, of=Delivery)
    lease_until = now + timedelta(seconds=lease_s)
    stmt = (update(Delivery).where(Delivery.id.in_(due.scalar_subquery()))
            .values(leased_until=lease_until, lease_id=Delivery.lease_id + 1)
            .returning(Delivery.id, Delivery.lease_id, Delivery.subscription_id, Delivery.item_id)
            .execution_options(synchronize_session=False))
    heads = session.execute(stmt).all()
    claims = [DeliveryClaim(row.id, row.lease_id, _chain(row)) for row in heads]
    # The events queued behind each head (same item, same subscription) come along, so a burst of
    # changes goes out in one batch, in order, instead of one event per item per tick.
    pairs = {(row.subscription_id, row.item_id) for row in heads if row.item_id is not None}
    room = limit - len(claims)
    if pairs and room > 0:
        followers = _chain_followers(session, pairs, {row.id for row in heads}, now=now, room=room,
                                     postgres=postgres)
        for start in range(0, len(followers), PARAMS_PER_QUERY):
            more = session.execute(
                update(Delivery).where(Delivery.id.in_(followers[start:start + PARAMS_PER_QUERY]))
                .values(leased_until=lease_until, lease_id=Delivery.lease_id + 1)
                .returning(Delivery.id, Delivery.lease_id, Delivery.subscription_id, Delivery.item_id)
                .execution_options(synchronize_session=False))
            claims.extend(DeliveryClaim(row.id, row.lease_id, _chain(row)) for row in more)
    return claims


def _unleased(now: datetime) -> ColumnElement[bool]:
    """No worker holds it: never claimed since it was due, or its last claim's lease ran out."""
    return or_(Delivery.leased_until.is_(None), Delivery.leased_until <= now)


def _chain(row: Any) -> tuple[int, int] | None:
    return None if row.item_id is None else (row.subscription_id, row.item_id)


def _chain_followers(session: Session, pairs: set[tuple[int, int]], heads: set[int], *, now: datetime,
                     room: int, postgres: bool) -> list[int]:
    """The due deliveries right behind each claimed head, in chain order, up to ``room``.

    A chain is cut at its first delivery that is not due (in retry backoff, or in flight with
    another worker): whatever follows it must wait for it, or a later event would overtake it.
    """
    out: list[int] = []
    ordered = sorted(pairs)
    # PostgreSQL takes the pairs as two arrays; SQLite as bound values, two per pair and one for its
    # item and subscription each.
    step = len(ordered) if postgres else PARAMS_PER_QUERY // 4
    for start in range(0, len(ordered), step):
        part = ordered[start:start + step]
        limit = room - len(out) + len(part)  # each chain's head comes too (skipped here rather than bound)
        rows = _pending_pg(session, part, limit) if postgres else _pending_sqlite(session, part, limit)
        cut: set[tuple[int, int]] = set()
        for row in rows:
            pair = (row.subscription_id, row.item_id)
            if row.id in heads or pair in cut:
                continue
            if (row.next_attempt_at is None or row.next_attempt_at > now
                    or (row.leased_until is not None and row.leased_until > now)):
                cut.add(pair)
                continue
            out.append(row.id)
            if len(out) >= room:
                return out
    return out


# A join to the pairs unnested: one probe of ix_deliveries_pending_chain per chain. As a list of
# pairs (an OR per pair) a claim's 300 chains took 9 ms to plan and 7 to filter, at 10,000,000.
# Not SKIP LOCKED: a skipped row would look like a gap and let the rows after it through. No other
# claim can hold them (the head we locked blocks every claim of the chain); a worker recording a
# result holds them for a moment only.
_PENDING_OF_CHAINS = text(
    "SELECT d.id, d.subscription_id, d.item_id, d.next_attempt_at, d.leased_until "
    "FROM unnest(CAST(:subs AS integer[]), CAST(:items AS integer[])) AS p(subscription_id, item_id) "
    "JOIN deliveries AS d ON d.subscription_id = p.subscription_id AND d.item_id = p.item_id "
    "AND d.state = 'pending' "
    "ORDER BY d.subscription_id, d.item_id, d.event_position, d.id LIMIT :n FOR UPDATE OF d")


def _pending_pg(session: Session, part: Sequence[tuple[int, int]], limit: int) -> Sequence[Any]:
    return session.execute(_PENDING_OF_CHAINS, {"subs": [s for s, _ in part], "items": [i for _, i in part],
                                                "n": limit}).all()


def _pending_sqlite(session: Session, part: Sequence[tuple[int, int]], limit: int) -> Sequence[Any]:
    subs, items = sorted({s for s, _ in part}), sorted({i for _, i in part})
    return session.execute(select(
        Delivery.id, Delivery.subscription_id, Delivery.item_id, Delivery.next_attempt_at, Delivery.leased_until,
    ).where(
        # The two lists let SQLite search ix_deliveries_order (for a list of pairs alone it scans
        # the whole index); the pairs then keep exactly the chains asked for.
        Delivery.subscription_id.in_(subs), Delivery.item_id.in_(items),
        tuple_(Delivery.subscription_id, Delivery.item_id).in_(part), Delivery.state == PENDING,
    ).order_by(Delivery.subscription_id, Delivery.item_id, Delivery.event_position, Delivery.id).limit(limit)).all()
