"""The queries `poller status`, `poller health` and the metrics scrape share, each written once.

By provider (or kind) where the gauges need the breakdown; `poller status` adds them up. Functions
take a Session and only read.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.store.models import (
    DUE_KEY,
    STUCK_AFTER_CLAIMS,
    Delivery,
    ItemFailure,
    ProviderAccount,
    Schedule,
    Subscription,
    Sweep,
    due_by,
)

#: The schedules `poller status`, `poller health` and the ``poller_items_stuck`` gauge count as
#: stuck (the partial index ``ix_item_schedules_stuck`` holds them; only active items have claims).
STUCK = Schedule.claims_since_poll >= STUCK_AFTER_CLAIMS


def any_overdue(session: Session, cutoff: datetime) -> bool:
    """Whether an item was due before ``cutoff``: the first entry of the due index, read at once.

    Asked first because counting the overdue items is a range the planner can misjudge: PostgreSQL,
    its statistics taken while the due range was elsewhere, expected a third of a million overdue
    items and read every row (60-130 ms) to count none. Usually none is, and then nothing is counted.
    """
    return session.scalar(select(Schedule.item_id).where(due_by(cutoff, strict=True))
                          .order_by(DUE_KEY).limit(1)) is not None


def overdue(session: Session, cutoff: datetime) -> dict[str, tuple[int, datetime | None]]:
    """Provider -> (items due before ``cutoff``, the earliest due time among them)."""
    if not any_overdue(session, cutoff):
        return {}
    # The overdue rows first (a range of the due index), grouped after: asked at once, SQLite
    # would rather read every item in provider order than sort the few overdue ones.
    late = (select(Schedule.provider, Schedule.next_poll_at).where(due_by(cutoff, strict=True))
            .cte("overdue").prefix_with("MATERIALIZED"))
    return {provider: (n, first) for provider, n, first in session.execute(
        select(late.c.provider, func.count(), func.min(late.c.next_poll_at)).group_by(late.c.provider))}


def earliest(times: list[datetime | None]) -> datetime | None:
    """The earliest of the times given, None if there is none."""
    return min((t for t in times if t is not None), default=None)


class Failures(NamedTuple):
    """One provider's items that failed their latest polls."""

    failing: int  #: past POLLER_FAILING_AFTER failures in a row (alerted)
    failures: int  #: the sum of consecutive failures over them all
    retrying: int  #: active, failed lately, not (yet) failing


def failures(session: Session) -> dict[str, Failures]:
    """Provider -> its items that failed their latest polls, counted in one read.

    Every failing item has failures counted (Item's invariant), so each has a row in the narrow
    ``item_failures`` (migration 0019), which the query reads instead of the items' own rows.
    """
    f = ItemFailure
    return {provider: Failures(n_failing, total or 0, n_retrying) for provider, n_failing, total, n_retrying
            in session.execute(
                select(f.provider, func.count().filter(f.failing.is_(True)), func.sum(f.consecutive_failures),
                       func.count().filter(f.failing.is_(False), f.state == "active"))
                .group_by(f.provider))}


def stuck(session: Session) -> dict[str, int]:
    """Provider -> active items claimed lease after lease without a completed poll."""
    return {provider: n for provider, n in session.execute(
        select(Schedule.provider, func.count()).where(STUCK).group_by(Schedule.provider))}


def auth_failures(session: Session) -> list[tuple[str, str, str | None]]:
    """(provider, account, error) of each account whose credentials or settings are refused."""
    return [(p, a, e) for p, a, e in session.execute(
        select(ProviderAccount.provider, ProviderAccount.account, ProviderAccount.auth_error)
        .where(ProviderAccount.auth_failed_at.is_not(None)).order_by(ProviderAccount.provider))]


def oldest_pending_delivery(session: Session) -> datetime | None:
    """When the oldest delivery still pending was created."""
    return session.scalar(select(func.min(Delivery.created_at)).where(Delivery.state == "pending"))


def subscription_counts(session: Session) -> dict[tuple[str, str], int]:
    """(kind, state) -> subscriptions."""
    return {(kind, state): n for kind, state, n in session.execute(
        select(Subscription.kind, Subscription.state, func.count()).group_by(Subscription.kind, Subscription.state))}


def sweeps(session: Session) -> list[Sweep]:
    """Every provider account's sweep row, by provider and account."""
    return list(session.scalars(select(Sweep).order_by(Sweep.provider, Sweep.account)))
