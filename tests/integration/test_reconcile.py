"""Issue 14: reconciliation intervals. While an account's sweep is healthy its items are polled at
POLLER_<P>__RECONCILE_SECONDS; when sweeps fail, per-item polling returns to its own interval by
itself, with ``provider.degraded``, and the long interval comes back with ``provider.restored``.
Against the simulator's Billit list, on both databases."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select

from cli.render import status_table
from tests.integration.conftest import SWEEP_INTERVAL_S
from tests.rows import update_items
from worker.metrics_state import StateCollector
from worker.reconcile import REFRESH_S, Reconciler
from worker.status import read_status
from worker.store import items as store_items
from worker.store import repo
from worker.store.models import Event, Item, Schedule, Sweep

RECONCILE_S = 3 * 3600.0
OWN_S = 60.0


@pytest.fixture
def orders(stack, sim, clock, sweeper):
    """20 orders tracked every OWN_S and observed, their account reconciling every RECONCILE_S."""
    # Each call of the monotonic clock is a refresh period later: every poll reads the health.
    stack.poller.reconciler = Reconciler(stack.sessions, {("billit", "default"): (SWEEP_INTERVAL_S, RECONCILE_S)},
                                         clock=clock, monotonic=itertools.count(0, REFRESH_S).__next__)
    refs = [sim.billit.create_order() for _ in range(20)]
    ids = [stack.poller.track("billit", str(r), interval_s=OWN_S).id for r in refs]
    assert poll(stack) == 20
    return ids


def poll(stack) -> int:
    return stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=1000, chunk_size=200)


def delays(stack, clock, ids) -> list[float]:
    """Seconds from now to each item's next poll."""
    with stack.sessions.begin() as s:
        return [(at - clock()).total_seconds() for at in
                s.scalars(select(Schedule.next_poll_at).where(Schedule.item_id.in_(ids)).order_by(Schedule.item_id))]


def next_polls(stack, ids) -> list:
    with stack.sessions.begin() as s:
        return list(s.scalars(select(Schedule.next_poll_at).where(Schedule.item_id.in_(ids))
                              .order_by(Schedule.item_id)))


def system_events(stack) -> list[tuple[str, dict]]:
    with stack.sessions.begin() as s:
        return [(e.type, e.data) for e in s.scalars(select(Event).where(Event.item_id.is_(None))
                                                     .order_by(Event.position))]


def next_sweep(stack, clock, sweeper):
    """Run the account's next sweep, the clock moved to when it is due."""
    with stack.sessions.begin() as s:
        clock.now = max(clock(), s.get(Sweep, ("billit", "default")).next_at)
    (result,) = sweeper.run_due()
    return result


def test_a_healthy_sweep_slows_polls_and_failing_sweeps_bring_them_back_with_degraded(
        stack, sim, clock, sweeper, orders):
    assert all(OWN_S * 0.9 <= d <= OWN_S for d in delays(stack, clock, orders))  # no sweep yet: own interval
    assert sweeper.run_due()[0].outcome == "ok"
    clock.advance(OWN_S)
    assert poll(stack) == 20
    assert all(RECONCILE_S * 0.9 <= d <= RECONCILE_S for d in delays(stack, clock, orders))

    # One item backing off after failures, one under a claim with a lease longer than its interval:
    # bringing the others back must leave both alone.
    backing_off, claimed = orders[0], orders[1]
    with stack.sessions.begin() as s:
        update_items(s, Item.id == backing_off, consecutive_failures=2, next_poll_at=clock() + timedelta(seconds=2000))
        store_items.make_due(s, "billit", "default", [("order", s.get(Item, claimed).ref)], now=clock())
        (claim,) = repo.claim_due(s, now=clock(), lease_s=300, limit=1)
    assert claim.item_id == claimed
    kept = next_polls(stack, [backing_off, claimed])

    sim.faults.add("billit", "503", count=3, ref="list")
    for _ in (1, 2):
        assert next_sweep(stack, clock, sweeper).outcome == "failed"
        assert system_events(stack) == []  # a failure or two: the watermark waits, nothing is missed
    assert all(d > OWN_S for d in delays(stack, clock, orders[2:]))
    assert next_sweep(stack, clock, sweeper).outcome == "failed"

    (degraded,) = system_events(stack)
    assert degraded[0] == "provider.degraded"
    assert degraded[1]["provider"] == "billit" and degraded[1]["failures"] == 3 and "503" in degraded[1]["error"]
    assert all(0 <= d <= OWN_S for d in delays(stack, clock, orders[2:]))  # back within their own interval
    assert next_polls(stack, [backing_off, claimed]) == kept
    status = read_status(stack.sessions, tick_s=5, clock=clock)
    assert "DEGRADED since" in status_table(status)
    gauges = {(m.name, tuple(sample.labels.values())): sample.value
              for m in StateCollector(stack.sessions, tick_s=5, clock=clock).collect() for sample in m.samples}
    assert gauges["poller_sweep_degraded", ("billit", "default")] == 1

    # Polled while degraded: each schedules its own interval again.
    with stack.sessions.begin() as s:  # (the claimed one pushed, so that its lease is over)
        store_items.make_due(s, "billit", "default", [("order", s.get(Item, claimed).ref)], now=clock())
    clock.advance(OWN_S)
    assert poll(stack) == 19  # all but the one backing off
    assert all(OWN_S * 0.9 <= d <= OWN_S for d in delays(stack, clock, orders[1:]))
    sim.faults.add("billit", "503", count=1, ref="list")
    assert next_sweep(stack, clock, sweeper).outcome == "failed"
    assert [t for t, _ in system_events(stack)] == ["provider.degraded"]  # said once

    assert next_sweep(stack, clock, sweeper).outcome == "ok"
    assert [t for t, _ in system_events(stack)] == ["provider.degraded", "provider.restored"]
    assert system_events(stack)[1][1]["failures"] == 4
    clock.advance(OWN_S)
    assert poll(stack) == 19
    assert all(RECONCILE_S * 0.9 <= d <= RECONCILE_S for d in delays(stack, clock, orders[1:]))
    gauges = {(m.name, tuple(sample.labels.values())): sample.value
              for m in StateCollector(stack.sessions, tick_s=5, clock=clock).collect() for sample in m.samples}
    assert gauges["poller_sweep_degraded", ("billit", "default")] == 0


def test_a_sweep_that_stopped_ends_the_long_intervals_without_a_failure(stack, sim, clock, sweeper, orders):
    """A sweeper that died records no failure; its last success growing old is enough."""
    assert sweeper.run_due()[0].outcome == "ok"
    clock.advance(OWN_S)
    assert poll(stack) == 20
    assert all(d > OWN_S for d in delays(stack, clock, orders))
    # No sweep for 10 minutes (longer than a sweep's lease and four intervals); items polled by
    # their schedule or a push meanwhile go back to their own interval.
    clock.advance(600)
    with stack.sessions.begin() as s:
        store_items.make_due(s, "billit", "default",
                             [("order", ref) for ref in s.scalars(select(Item.ref).where(Item.id.in_(orders)))],
                             now=clock())
    assert poll(stack) == 20
    assert all(OWN_S * 0.9 <= d <= OWN_S for d in delays(stack, clock, orders))


def test_only_the_kinds_a_sweep_covers_are_slowed(stack, clock, sweeper, tmp_path):
    """Amili Norway's sweep lists invoices: its cases and batches keep their own interval."""
    from config.settings import Settings
    from config.wiring import reconciler_for
    from worker.providers.amili_collection import AmiliCollectionSettings

    reconciler = Reconciler(stack.sessions, {("billit", "default"): (SWEEP_INTERVAL_S, RECONCILE_S)}, clock=clock,
                            monotonic=itertools.count(0, REFRESH_S).__next__, covered={"billit": ("invoice",)})
    assert sweeper.run_due()[0].outcome == "ok"  # healthy
    assert reconciler.interval("billit", "default", "invoice", OWN_S) == RECONCILE_S
    assert reconciler.interval("billit", "default", "order", OWN_S) == OWN_S
    wired = reconciler_for(Settings(home=tmp_path, amili_collection=AmiliCollectionSettings(
        sweep_seconds=60, reconcile_seconds=3600)))
    assert wired is not None and wired.covered == {"amili_collection": ("invoice",)}
    assert wired.plans == {("amili_collection", "default"): (60.0, 3600.0)}
