"""Issue 13: the running counts (worker.store.tallies) that `poller status`, the dashboard and the
metrics read agree with counting the rows, on both databases, whatever path wrote the rows: the
poller, the API's batch upsert, a plain UPDATE, a delete, a subscription's cascade, a prune; and
folding them, even several folds at once beside writers, loses and doubles nothing."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import delete, func, select, update

from tests.rows import update_items
from worker.retention import Retention
from worker.status import read_status
from worker.store import tallies
from worker.store.items import Upsert, upsert_items
from worker.store.models import Delivery, DeliveryTally, Item, ItemTally, Subscription
from worker.store.prune import Pruner

DAY = 86400.0


def exact(stack) -> tuple[dict, dict]:
    """The counts by counting every row."""
    with stack.sessions.begin() as s:
        items = {(p, a, st, float(i)): n for p, a, st, i, n in s.execute(
            select(Item.provider, Item.account, Item.state, Item.interval_s, func.count())
            .group_by(Item.provider, Item.account, Item.state, Item.interval_s))}
        deliveries: dict[int, dict[str, int]] = {}
        for sub_id, state, n in s.execute(select(Delivery.subscription_id, Delivery.state, func.count())
                                          .group_by(Delivery.subscription_id, Delivery.state)):
            deliveries.setdefault(sub_id, {})[state] = n
    return items, deliveries


def tallied(stack) -> tuple[dict, dict]:
    with stack.sessions.begin() as s:
        items = {(c.provider, c.account, c.state, c.interval_s): c.n for c in tallies.item_counts(s)}
        return items, tallies.delivery_counts(s)


def agree(stack) -> None:
    """The tallies say what counting says, before and after a fold."""
    assert tallied(stack) == exact(stack)
    with stack.sessions.begin() as s:
        tallies.fold(s)
    assert tallied(stack) == exact(stack)


def rows(stack, model) -> int:
    with stack.sessions.begin() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_counts_follow_every_writer(stack, receiver):
    stack.subs.add(receiver.url)
    failing, _ = stack.subs.add("http://127.0.0.1:1/refused")  # its deliveries stay pending, then fail
    ids = stack.orders(3, stages=2)
    agree(stack)
    stack.deliver()
    receiver.wait_for(9)
    agree(stack)  # pending -> succeeded for one subscription, retrying for the other
    with stack.sessions.begin() as s:  # the API's batch upsert: new items, and one with a new interval
        identity = s.execute(select(Item.provider, Item.account, Item.kind, Item.ref).where(Item.id == ids[0])).one()
        upsert_items(s, [Upsert(("billit", "default", "order", f"batch-{n}"), 30.0, 60.0) for n in range(50)]
                     + [Upsert(tuple(identity), 7.5, 60.0)], now=stack.clock())
    agree(stack)
    with stack.sessions.begin() as s:  # plain UPDATEs, as an operator's SQL would do
        update_items(s, Item.ref.like("batch-1%"), state="paused", next_poll_at=None)
        s.execute(update(Item).where(Item.ref.like("batch-2%")).values(account="other"))
        update_items(s, Item.ref.like("batch-3%"), next_poll_at=stack.clock())  # not counted
        s.execute(update(Delivery).where(Delivery.subscription_id == failing.id).values(state="failed"))
    agree(stack)
    with stack.sessions.begin() as s:  # untracking deletes the row (worker.catalog), as does this
        s.execute(delete(Item).where((Item.id == ids[1]) | Item.ref.like("batch-4%")))
    agree(stack)
    stack.subs.remove(failing.id)  # its deliveries go by cascade
    assert failing.id not in tallied(stack)[1]
    agree(stack)
    stack.clock.advance(120 * DAY)
    with stack.sessions.begin() as s:
        update_items(s, Item.id == ids[2], state="terminal", next_poll_at=None,
                     updated_at=stack.clock() - timedelta(days=100))
    Pruner(stack.sessions, clock=stack.clock, batch=2).run(
        Retention(events_s=30 * DAY, snapshots_keep=0, attempts_s=30 * DAY, finished_items_s=90 * DAY)
        .cutoffs(stack.clock()))
    agree(stack)
    st = read_status(stack.sessions, tick_s=5, clock=stack.clock)
    by_provider: dict[str, dict[str, int]] = {}
    for (provider, _account, state, _interval), n in exact(stack)[0].items():
        by_provider.setdefault(provider, {}).setdefault(state, 0)
        by_provider[provider][state] += n
    assert st.items == by_provider and sum(n for by in st.items.values() for n in by.values()) == rows(stack, Item)
    assert rows(stack, ItemTally) == len(tallied(stack)[0])  # folded: one row per key
    assert rows(stack, DeliveryTally) == sum(len(by) for by in tallied(stack)[1].values())


def test_folds_at_once_beside_writers_lose_nothing(stack):
    """Three threads insert and finish items while two others fold over and over: the counts end
    exact (a fold that summed rows another deleted, or deleted rows it did not sum, would not)."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for round_ in range(40):
                with stack.sessions.begin() as s:
                    made = upsert_items(s, [Upsert(("billit", "default", "order", f"w{n}-{round_}-{k}"), 60.0, 60.0)
                                            for k in range(5)], now=stack.clock())
                    s.execute(update(Item).where(Item.id == made[0][0]).values(state="terminal"))
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)

    def fold() -> None:
        try:
            while not stop.is_set():
                with stack.sessions.begin() as s:
                    tallies.fold(s)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    folders = [threading.Thread(target=fold) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in folders + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in folders:
        t.join()
    assert not errors, errors
    assert rows(stack, Item) == 600
    agree(stack)


def test_a_subscription_never_delivered_to_has_no_counts(stack):
    with stack.sessions.begin() as s:
        assert tallies.delivery_counts(s) == {}
        assert s.scalar(select(func.count()).select_from(Subscription)) == 0
