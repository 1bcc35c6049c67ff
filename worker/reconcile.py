"""Reconciliation intervals (issue 14): a healthy sweep lets an account's items be polled rarely.

With ``POLLER_<P>__RECONCILE_SECONDS`` set beside ``…__SWEEP_SECONDS``, an item of that account
whose sweep is healthy is next polled after the longer of its own interval and the reconciliation
interval: the sweep finds its changes, the rare poll is the safety net. When the account's sweeps
fail ``DEGRADED_AFTER`` times in a row, the sweeper writes ``provider.degraded`` and brings the
items scheduled that far out back within their own interval (``pull_in``); the next successful
sweep writes ``provider.restored``, and from then on each poll schedules the long interval again.

Health is read from the ``sweeps`` table, at most every ``REFRESH_S`` per process: it is not a
flag the failing sweeper must remember to clear, so a sweeper that died (its last success growing
old) also ends the long intervals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.domain import ItemState
from worker.store.models import Item, Schedule, Sweep

#: Failed sweeps in a row after which an account counts as degraded.
DEGRADED_AFTER = 3
#: How often a process rereads the sweeps' health.
REFRESH_S = 5.0
#: A sweep may take this long (its lease, worker.sweeps.LEASE_S) without counting as stopped.
SWEEP_LEASE_S = 300.0
#: Items pulled in by ``pull_in`` are spread over their interval in this many steps.
SPREAD_STEPS = 997


def healthy(ok_at: datetime | None, failures: int, sweep_s: float, now: datetime) -> bool:
    """Whether an account's sweep can stand in for its items' polls: it has read the whole list
    recently (within a few intervals, or one sweep's lease) and has not failed DEGRADED_AFTER
    times since."""
    if ok_at is None or failures >= DEGRADED_AFTER:
        return False
    return now - ok_at <= timedelta(seconds=max((DEGRADED_AFTER + 1) * sweep_s, SWEEP_LEASE_S))


def effective_interval(interval_s: float, reconcile_s: float | None, is_healthy: bool) -> float:
    """The interval a successful poll schedules the item's next poll after."""
    return max(interval_s, reconcile_s) if reconcile_s and is_healthy else interval_s


def spread_next(item_id: int, interval_s: float, now: datetime) -> datetime:
    """When a pulled-in item is next polled: within its own interval, spread by its id, so a
    degraded account's items do not all come due in one tick."""
    return now + timedelta(seconds=interval_s * (item_id % SPREAD_STEPS) / SPREAD_STEPS)


def pull_in(session: Session, provider: str, account: str, now: datetime) -> int:
    """Bring the account's active items scheduled past their own interval (by a reconciliation
    interval) back within it. Items backing off after failures keep their backoff, and items under
    a claim (``due_since`` set: in flight, or deferred by a rate limit) their lease. Returns how many."""
    query = (select(Item.id, Item.interval_s, Schedule.next_poll_at).join(Schedule, Schedule.item_id == Item.id)
             .where(Item.provider == provider, Item.account == account, Item.state == ItemState.ACTIVE.value,
                    Item.consecutive_failures == 0, Schedule.due_since.is_(None), Schedule.next_poll_at > now)
             .order_by(Item.id))
    if session.get_bind().dialect.name == "postgresql":
        # The schedules locked, as every writer locks them; one a poll or claim holds now is left
        # out: it gets a fresh schedule from that poll.
        query = query.with_for_update(of=Schedule, skip_locked=True)
    rows = session.execute(query).all()
    moves = [{"b_id": r.id, "b_at": spread_next(r.id, r.interval_s, now)} for r in rows
             if r.next_poll_at > now + timedelta(seconds=r.interval_s)]
    if moves:
        table = cast(Table, Schedule.__table__)
        # Checked again as it is written: an item claimed or paused since the read keeps its schedule.
        session.connection().execute(update(table).where(table.c.item_id == bindparam("b_id"),
                                                         table.c.due_since.is_(None), table.c.next_poll_at.is_not(None))
                                     .values(next_poll_at=bindparam("b_at")), moves)
    return len(moves)


class Reconciler:
    """Per process: the interval each successful poll schedules, by its account's sweep health.

    Args:
        sessions: the database (reads the ``sweeps`` rows).
        plans: ``(provider, account)`` -> ``(sweep seconds, reconcile seconds)``, for every account
            with a reconciliation interval.
        covered: provider -> the kinds of item its sweep covers (all, for a provider not named):
            Amili Norway's list holds invoices, not its cases and batches.
        clock: wall clock (UTC), for the health rule.
        monotonic: for spacing the reads.
    """

    def __init__(self, sessions: sessionmaker[Session], plans: Mapping[tuple[str, str], tuple[float, float]], *,
                 clock: Callable[[], datetime], monotonic: Callable[[], float] = time.monotonic,
                 covered: Mapping[str, Collection[str]] | None = None) -> None:
        self.sessions, self.plans, self.clock, self.monotonic = sessions, dict(plans), clock, monotonic
        self.covered = dict(covered or {})
        self._healthy: dict[tuple[str, str], bool] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def interval(self, provider: str, account: str, kind: str, interval_s: float) -> float:
        """The interval to schedule an item's next poll after a success."""
        plan = self.plans.get((provider, account))
        if plan is None or (provider in self.covered and kind not in self.covered[provider]):
            return interval_s
        return effective_interval(interval_s, plan[1], self._health().get((provider, account), False))

    def _health(self) -> dict[tuple[str, str], bool]:
        tick = self.monotonic()
        with self._lock:
            if self._read_at is not None and tick - self._read_at < REFRESH_S:
                return self._healthy
            now = self.clock()
            try:
                with self.sessions.begin() as s:
                    rows = s.execute(select(Sweep.provider, Sweep.account, Sweep.ok_at, Sweep.failures)).all()
            except Exception:  # noqa: BLE001 - unknown health means the normal interval, never a long one
                rows = []
            self._healthy = {(r.provider, r.account): healthy(r.ok_at, r.failures, self.plans[r.provider, r.account][0],
                                                              now)
                             for r in rows if (r.provider, r.account) in self.plans}
            self._read_at = tick
            return self._healthy
