"""Issue 14: incremental sweeps against the simulator's Billit order list, on both databases.

A sweep reads `GET /v1/orders?$filter=LastModified ge DateTime'…'&$orderby=LastModified asc`,
following NextPageLink. A tracked active order listed with a change is stored from the list as
its poll would store it (the same snapshot and events, under the same lease rules), with no call
of its own; one the list cannot be believed for (no snapshot yet, nothing new shown, or less than
the snapshot showed) is made due and polled. The watermark moves only past a sweep whose every
page was read.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from prometheus_client import REGISTRY as METRICS
from sqlalchemy import select

from cli.render import status_table
from tests.integration.conftest import SWEEP_INTERVAL_S as INTERVAL_S
from tests.integration.conftest import late_poll, next_sweep
from worker.metrics_state import StateCollector
from worker.providers.billit import BillitSettings, normalize
from worker.status import read_status
from worker.store.models import Event, Item, Sweep


def track(stack, sim, n: int, untracked: int = 0) -> tuple[list[int], list[int]]:
    """n orders tracked (hourly) and observed, plus ``untracked`` orders nobody tracks."""
    orders = [sim.billit.create_order() for _ in range(n + untracked)]
    ids = [stack.poller.track("billit", str(o), interval_s=3600).id for o in orders[:n]]
    assert poll(stack) == n
    return orders, ids


def poll(stack) -> int:
    return stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=1000, chunk_size=200)


def changed(stack) -> list[int]:
    with stack.sessions.begin() as s:
        return list(s.scalars(select(Event.item_id).where(Event.type == "status.changed").order_by(Event.item_id)))


def sweep_row(stack) -> Sweep:
    with stack.sessions.begin() as s:
        row = s.get(Sweep, ("billit", "default"))
        s.expunge(row)
        return row


def list_requests(sim) -> int:
    return sum(1 for entry in sim.request_log if entry[1:] == ("billit", "GET /v1/orders"))


def test_a_sweep_pages_through_the_list_and_each_change_becomes_one_event(stack, sim, clock, sweeper):
    orders, ids = track(stack, sim, 125, untracked=5)
    first = sweeper.run_due()[0]  # no watermark yet: a day back, every order listed (120 + 10)
    # Each tracked order is listed at the version (LastModified) its poll read: nothing to do.
    assert (first.outcome, first.pages, first.entries["seen"], first.entries["ignored"]) == ("ok", 2, 125, 5)
    assert poll(stack) == 0 and changed(stack) == []
    mark = sweep_row(stack).watermark
    assert mark is not None and sweep_row(stack).next_at == clock() + timedelta(seconds=INTERVAL_S)

    sim.clock.advance(6)  # past the 5 s overlap, before the orders' own next stage (10 s)
    for order in orders[:10] + orders[-1:]:  # ten tracked orders move on, and one nobody tracks
        sim.billit.set_stage(order, 1)
    requests_before = len(sim.request_log)
    # Read from 5 s before the watermark: the orders created then are listed again, and skipped.
    second = next_sweep(sweeper, clock)
    assert (second.pages, second.entries["stored"], second.entries["due"], second.entries["ignored"],
            second.entries["seen"]) == (2, 10, 0, 1, 119)
    assert sweep_row(stack).watermark > mark
    assert changed(stack) == ids[:10] and poll(stack) == 0  # stored from the list: nothing left to poll
    assert len(sim.request_log) - requests_before == 2  # two list pages, no order call
    for item_id, order in zip(ids[:10], orders[:10], strict=True):  # as the order's own call reads it
        assert stack.poller.latest_snapshot(item_id).fields == normalize(sim.billit.order_body(order)).fields
    with stack.sessions.begin() as s:  # scheduled as a poll schedules: within its interval from now
        stored = s.scalars(select(Item).where(Item.id.in_(ids[:10]))).all()
        assert all(clock() < i.next_poll_at <= clock() + timedelta(seconds=3600) for i in stored)
        assert {(i.last_success_at, i.claims_since_poll, i.due_since) for i in stored} == {(clock(), 0, None)}

    third = next_sweep(sweeper, clock)  # nothing new: what the overlap lists again was read already
    assert (third.pages, third.entries["due"], third.entries["stored"], third.entries["seen"]) == (1, 0, 0, 11)
    assert poll(stack) == 0 and changed(stack) == ids[:10]


def test_a_page_that_fails_keeps_the_watermark_and_the_next_sweep_misses_nothing(stack, sim, clock, sweeper):
    orders, ids = track(stack, sim, 130)
    assert sweeper.run_due()[0].outcome == "ok" and poll(stack) == 0
    mark = sweep_row(stack).watermark
    sim.clock.advance(1)
    for order in orders[:125]:
        sim.billit.set_stage(order, 1)
    sim.faults.add("billit", "503", count=1, ref="list:120")  # the second page fails
    failed_before = METRICS.get_sample_value("poller_sweeps_total", {"provider": "billit", "outcome": "failed"}) or 0
    failed = next_sweep(sweeper, clock)
    assert (failed.outcome, failed.pages) == ("failed", 1) and "ProviderUnavailable" in failed.error
    row = sweep_row(stack)
    assert (row.watermark, row.failures) == (mark, 1) and "503" in row.error
    assert row.next_at >= clock() + timedelta(seconds=INTERVAL_S)
    assert METRICS.get_sample_value("poller_sweeps_total", {"provider": "billit", "outcome": "failed"}) \
        == failed_before + 1
    assert sweeper.run_due() == []  # backing off
    # Where an operator sees it: `poller status`, and the gauges the alert PollerSweepFailing reads.
    status = read_status(stack.sessions, tick_s=5, clock=clock)
    assert [(sw["failures"], sw["watermark"]) for sw in status.sweeps] == [(1, mark)]
    assert "sweep billit/default" in status_table(status) and "failing 1 times: ProviderUnavailable" in \
        status_table(status)
    gauges = {(m.name, tuple(sample.labels.values())): sample.value
              for m in StateCollector(stack.sessions, tick_s=5, clock=clock).collect() for sample in m.samples}
    assert gauges["poller_sweep_consecutive_failures", ("billit", "default")] == 1

    clock.now = row.next_at
    again = sweeper.run_due()[0]
    # The failed sweep stored the changes on its first page (the 5 unchanged orders, oldest, then
    # 115 changed): listed again at the versions already read, they are left alone; the second
    # page's 10 are stored now.
    assert (again.outcome, again.pages, again.entries["stored"], again.entries["seen"]) == ("ok", 2, 10, 120)
    row = sweep_row(stack)
    assert row.watermark > mark and (row.failures, row.error) == (0, None)
    assert poll(stack) == 0 and changed(stack) == ids[:125]  # every change once, none missed


def test_a_poll_under_way_when_the_sweep_stores_its_order_stores_nothing(stack, sim, clock, sweeper):
    orders, ids = track(stack, sim, 1)
    assert sweeper.run_due()[0].entries["seen"] == 1
    with late_poll(stack.poller, sim, clock, "billit", str(orders[0])) as reports:  # Billit answers late
        sim.clock.advance(1)
        sim.billit.set_stage(orders[0], 1)  # the order moves on while its old answer is on the way
        assert next_sweep(sweeper, clock).entries["stored"] == 1  # claimed: the lease moves on
    assert reports[0].lost_lease == 1 and changed(stack) == ids  # the older answer is not stored
    assert poll(stack) == 0 and changed(stack) == ids  # one event, once


def test_two_sweepers_at_once_sweep_an_account_once(stack, sim, clock, sweeper):
    track(stack, sim, 3)
    with stack.sessions.begin() as s:  # another worker's sweep is under way: the lease is held
        s.add(Sweep(provider="billit", account="default", lease_until=clock() + timedelta(seconds=60),
                    updated_at=clock()))
    assert sweeper.run_due() == [] and list_requests(sim) == 0
    clock.advance(61)  # that sweep died: its lease runs out, and this one takes the account
    assert sweeper.run_due()[0].outcome == "ok" and list_requests(sim) == 1


def test_beat_sends_the_sweep_tick_only_when_an_account_sweeps(tmp_path):
    from config.celery_app import SWEEP_TASK, create_app
    from config.settings import Settings

    quiet = Settings(home=tmp_path / "a", broker_url="redis://127.0.0.1:1/0")
    assert quiet.sweep_intervals() == {} and "sweep-due" not in create_app(quiet).conf.beat_schedule
    sweeping = Settings(home=tmp_path / "b", broker_url="redis://127.0.0.1:1/0", billit=BillitSettings(
        sweep_seconds=10, accounts={"acme": {"sweep_seconds": 30}, "quiet": {"sweep_seconds": 0}}))
    assert sweeping.sweep_intervals() == {("billit", "default"): 10.0, ("billit", "acme"): 30.0}
    entry = create_app(sweeping).conf.beat_schedule["sweep-due"]
    assert entry["task"] == SWEEP_TASK and entry["schedule"] == sweeping.tick_seconds


def test_two_first_sweeps_of_an_account_at_once_neither_fails(stack, sim, clock, sweeper):
    """Another worker creates the account's sweep row at the same moment (its transaction still
    open): this sweeper waits for it and goes on, instead of failing on the duplicate row."""
    track(stack, sim, 1)
    other = stack.sessions()
    other.add(Sweep(provider="billit", account="default", lease_until=clock() - timedelta(seconds=1),
                    updated_at=clock()))
    other.flush()  # the row exists, uncommitted: this sweeper's insert of it must wait
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(_run_catching(sweeper)))
    thread.start()
    if stack.sessions.kw["bind"].dialect.name == "postgresql":  # until its insert waits on the row's lock
        deadline = time.monotonic() + 10
        with stack.sessions.kw["bind"].connect() as conn:
            while not conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE NOT granted").scalar():
                assert time.monotonic() < deadline, "the sweeper never waited on the other transaction"
                conn.rollback()
                threading.Event().wait(0.01)
    else:
        thread.join(1.0)  # SQLite: one writer at a time; it waits for the write lock (or has read first)
    other.commit()
    other.close()
    thread.join(30)
    assert len(results) == 1 and not isinstance(results[0], Exception), results
    assert [r.outcome for r in results[0]] == ["ok"]


def _run_catching(sweeper):
    try:
        return sweeper.run_due()
    except Exception as err:  # noqa: BLE001 - the test asserts on it
        return err


def test_a_list_of_exactly_the_page_cap_is_read_and_one_page_more_fails(stack, sim, clock, sweeper, monkeypatch):
    import worker.providers.billit as billit

    track(stack, sim, 241)  # three pages: 120, 120, 1
    monkeypatch.setattr(billit, "MAX_PAGES", 3)
    first = sweeper.run_due()[0]
    assert (first.outcome, first.pages) == ("ok", 3)
    monkeypatch.setattr(billit, "MAX_PAGES", 2)
    sim.clock.advance(1)
    with stack.sessions.begin() as s:  # start over: a day back again
        s.get(Sweep, ("billit", "default")).watermark = None
    failed = next_sweep(sweeper, clock)
    assert failed.outcome == "failed" and "past 2 pages" in failed.error


def test_discovery_tracks_what_the_sweep_finds_untracked_and_passes_the_filter(stack, sim, clock, sweeper):
    from worker.discovery import parse_filter
    from worker.store.models import Item

    orders, ids = track(stack, sim, 3, untracked=4)
    sweeper.discover = {("billit", "default"): parse_filter("OrderType eq 'CreditNote'")}
    assert sweeper.run_due()[0].entries["discovered"] == 0  # the simulator's orders are invoices
    sweeper.discover = {("billit", "default"): parse_filter("OrderDirection eq 'Income' and OrderType eq 'Invoice'")}
    sim.clock.advance(6)
    for order in orders:
        sim.billit.set_stage(order, 1)
    found = next_sweep(sweeper, clock)
    assert (found.entries["stored"], found.entries["discovered"], found.entries["ignored"]) == (3, 4, 0)
    with stack.sessions.begin() as s:
        new = s.scalars(select(Item).where(Item.id.not_in(ids)).order_by(Item.id)).all()
        assert sorted(int(i.ref) for i in new) == sorted(orders[3:])
        assert all(i.labels == {"source": "discovered"} and i.interval_s == 300 for i in new)
    assert poll(stack) == 4  # the four new ones (the three changed were stored from the list)
    again = next_sweep(sweeper, clock)
    assert again.entries["discovered"] == 0  # tracked now: never twice
    listed = stack.poller.items()
    assert len(listed) == 7


def test_a_list_that_shows_less_than_the_order_call_is_not_believed_and_its_orders_are_polled(
        stack, sim, clock, sweeper):
    """Against a Billit whose list leaves out an order's messages, or lists fewer than the order's
    own call (the documents promise neither way), orders must not flap between two versions: those
    entries are polled, and the change is still one event each."""
    orders, ids = track(stack, sim, 3)
    assert sweeper.run_due()[0].entries["seen"] == 3
    sim.clock.advance(6)
    for order in orders:
        sim.billit.set_stage(order, 2)
    assert next_sweep(sweeper, clock).entries["stored"] == 3
    assert all(stack.poller.latest_snapshot(i).fields["messages"] for i in ids)  # each shows a message now

    sim.clock.advance(6)
    for order in orders:
        sim.billit.set_stage(order, 3)
    # This page lists the first order without Messages and the second with none: only the third is
    # believed (which order is which entry depends on their LastModified; all three moved on).
    sim.faults.add("billit", "drift", count=1, ref="list", drop=["Items.0.Messages"], set={"Items.1.Messages": []})
    requests_before = len(sim.request_log)
    thin = next_sweep(sweeper, clock)
    assert (thin.entries["stored"], thin.entries["due"]) == (1, 2)
    assert poll(stack) == 2 and len(sim.request_log) - requests_before == 1 + 2  # one page, two order calls
    with stack.sessions.begin() as s:  # one event per change, none undone
        events = s.scalars(select(Event.item_id).where(Event.type != "status.observed")).all()
    assert sorted(events) == sorted(ids + ids)
    for item_id, order in zip(ids, orders, strict=True):
        assert stack.poller.latest_snapshot(item_id).fields == normalize(sim.billit.order_body(order)).fields



def test_an_order_listed_at_an_older_version_than_its_poll_read_is_polled_not_written_back(
        stack, sim, clock, sweeper):
    """A list page read just before a poll stored a newer answer (or a list lagging behind the
    order call, or a provider whose clocks disagree) must not write the order back: the order's
    own call says which is true, and nothing is missed either way."""
    from worker.listed import Listed
    from worker.providers.billit import normalize

    orders, ids = track(stack, sim, 1)
    older = sim.billit.order_body(orders[0])  # stage 0, as the list read it
    sim.clock.advance(6)
    sim.billit.set_stage(orders[0], 2)
    clock.advance(3600)
    assert poll(stack) == 1 and changed(stack) == ids  # the poll stored stage 2
    report = stack.poller.store_listed("billit", "default", {("order", str(orders[0])): Listed(
        older["LastModified"], normalize(older, ref=str(orders[0])))})
    assert (report.seen, report.stored, report.due) == (0, 0, 1)
    assert changed(stack) == ids and stack.poller.latest_snapshot(ids[0]).status == "delivered"
    assert poll(stack) == 1 and changed(stack) == ids  # polled: still delivered, no event
