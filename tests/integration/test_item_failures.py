"""Issue 13: ``item_failures`` (migration 0019), which the failure counts of `poller status`, the
dashboard and the metrics read, holds exactly the items with failures, on both databases, whatever
wrote them: failed polls as they pile up, the success that ends them, a plain UPDATE, a pause, a
delete; and a database upgraded to it is seeded from the items it has."""

from __future__ import annotations

from sqlalchemy import delete, select

from tests.integration.test_schedules import _downgrade
from tests.rows import update_items
from worker.status import read_status
from worker.store.migrate import upgrade
from worker.store.models import Item, ItemFailure

HOUR = 3600.0  # past any backoff (POLLER_BACKOFF_MAX_SECONDS is an hour)


def rows(stack) -> tuple[dict, dict]:
    """(from the items, from item_failures): item id -> (provider, state, failures, failing)."""
    with stack.sessions.begin() as s:
        exact = {i: (p, st, n, f) for i, p, st, n, f in s.execute(
            select(Item.id, Item.provider, Item.state, Item.consecutive_failures, Item.failing)
            .where(Item.consecutive_failures > 0))}
        kept = {r.item_id: (r.provider, r.state, r.consecutive_failures, r.failing)
                for r in s.scalars(select(ItemFailure))}
    return exact, kept


def poll_round(stack) -> None:
    stack.clock.advance(HOUR)
    stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=100, chunk_size=100)


def test_failure_rows_follow_every_writer(stack, engine):
    ids = stack.orders(4, stages=0)
    assert rows(stack) == ({}, {})
    stack.sim.faults.add("billit", "500")
    for _ in range(6):  # past POLLER_FAILING_AFTER (5): retrying, then failing
        poll_round(stack)
        exact, kept = rows(stack)
        assert kept == exact and len(kept) == 4
    assert all(failing for *_, failing in exact.values()) and {n for _, _, n, _ in exact.values()} == {6}
    with stack.sessions.begin() as s:  # plain UPDATEs, as an operator's SQL would do
        update_items(s, Item.id == ids[0], consecutive_failures=2, failing=False)
        update_items(s, Item.id == ids[1], state="paused", next_poll_at=None)
        s.execute(delete(Item).where(Item.id == ids[2]))
    exact, kept = rows(stack)
    assert kept == exact and set(kept) == {ids[0], ids[1], ids[3]}
    st = read_status(stack.sessions, tick_s=5, clock=stack.clock)
    assert (st.failing, st.retrying) == (2, 1)  # a paused item stays failing, and is not retrying
    _downgrade(engine, "0018")  # the migration seeds the rows from the items there are
    upgrade(engine)
    assert rows(stack) == (exact, exact)
    stack.sim.faults.clear("billit")
    poll_round(stack)  # the successes end the failures
    exact, kept = rows(stack)
    assert kept == exact == {ids[1]: ("billit", "paused", 6, True)}
    with stack.sessions.begin() as s:
        update_items(s, Item.id == ids[1], consecutive_failures=0, failing=False)
    assert rows(stack) == ({}, {})
