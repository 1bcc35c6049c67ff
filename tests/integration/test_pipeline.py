"""Track -> dispatch -> fetch over HTTP -> normalize -> diff -> store, on real databases.

The simulator serves Billit over loopback; time (ours and the simulator's) moves by hand, so
every schedule decision is checked exactly. The Celery path is in test_e2e.py.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.integration.conftest import first_poll_error
from worker.catalog import Catalog
from worker.errors import DuplicateItemError, InputError
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store.db import make_sessionmaker
from worker.store.models import Event, Item, Snapshot

STAGE = 10.0
POLICY = PollPolicy(backoff_base_s=2, backoff_max_s=60, jitter_ratio=0.1, failing_after=3)


@pytest.fixture
def service(engine, sim, clock):
    settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234")
    providers = ProviderSet({"billit": settings}, ProviderContext(http=HttpOptions(timeout_s=0.5), clock=clock))
    return PollerService(make_sessionmaker(engine), providers, POLICY, clock=clock, rng=random.Random(7))


def poll_round(service) -> int:
    """One dispatch tick whose chunks are polled in-process."""
    return service.dispatch_due(service.poll_claims, lease_s=30, limit=1000, chunk_size=2)


def next_due(service, clock) -> None:
    """Move our clock to the earliest scheduled poll."""
    due = [i.next_poll_at for i in service.items() if i.next_poll_at]
    clock.now = max(clock.now, min(due))


def events_by_item(service) -> dict[int, list[tuple[int, str, str | None]]]:
    out: dict[int, list] = {}
    for e in service.events_after(0):
        out.setdefault(e.item_id, []).append((e.seq, e.type, e.data["status"]))
    return out


def test_three_orders_through_their_lives(service, sim, clock, engine):
    """Each order's events, in order, exactly once, from first poll to terminal."""
    sim.billit.create_order(1001, "paid")
    sim.billit.create_order(1002, "refused")
    ids = [service.track("billit", ref, interval_s=5).id for ref in ("1001", "1002")]
    for _ in range(8):
        poll_round(service)
        poll_round(service)  # nothing due twice in one moment
        sim.clock.advance(STAGE)
        clock.advance(6)
    sim.billit.create_order(1003, "paid")
    ids.append(service.track("billit", "1003", interval_s=5).id)
    for _ in range(8):
        poll_round(service)
        sim.clock.advance(STAGE)
        clock.advance(6)
    paid = [(1, "status.observed", "to_send"), (2, "status.changed", "pending_delivery"),
            (3, "status.changed", "delivered"), (4, "status.changed", "received"),
            (5, "status.changed", "paid")]
    refused = [(1, "status.observed", "to_send"), (2, "status.changed", "pending_delivery"),
               (3, "status.changed", "refused"), (4, "status.changed", "credited")]
    assert events_by_item(service) == {ids[0]: paid, ids[1]: refused, ids[2]: paid}
    items = {i.id: i for i in service.items()}
    assert all(items[i].state == "terminal" and items[i].next_poll_at is None for i in ids)
    assert items[ids[0]].last_status == "paid" and items[ids[1]].last_status == "credited"
    # one snapshot per distinct document, raw body kept
    with make_sessionmaker(engine).begin() as s:
        snaps = s.scalars(select(Snapshot).where(Snapshot.item_id == ids[0]).order_by(Snapshot.id)).all()
    assert [x.status for x in snaps] == [p[2] for p in paid]
    assert snaps[-1].raw["OrderID"] == 1001 and snaps[-1].raw["Messages"][-1]["Description"].startswith("PD:")
    # the paid change names the new IMR message
    changed = service.events_after(0)
    last = [e for e in changed if e.item_id == ids[0]][-1]
    assert {"path": "messages[2]", "from": None, "to": last.data["snapshot"]["messages"][2]} in last.data["changes"]
    assert last.data["previous_status"] == "received" and last.data["terminal"] is True


def test_changed_event_lists_field_changes(service, sim, clock):
    """status.changed carries {path, from, to} for every changed field."""
    sim.billit.create_order(1001)
    item = service.track("billit", "1001", interval_s=5)
    poll_round(service)
    sim.clock.advance(STAGE)
    clock.advance(6)
    poll_round(service)
    change = service.events_after(0)[-1]
    assert change.type == "status.changed"
    assert change.data["changes"] == [
        {"path": "delivery", "from": None, "to": {
            "is_delivered": False, "status": "Pending", "date": None, "info": None,
            "refused_date": None, "refused_reason": None, "refused_info": None}},
        {"path": "order_status", "from": "ToSend", "to": "ToPay"},
    ]
    assert change.data["item_id"] == item.id and change.data["ref"] == "1001"


def test_unchanged_polls_write_no_event(service, sim, clock):
    """Polling an unchanged order five times gives one status.observed and nothing else."""
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    for _ in range(5):
        assert poll_round(service) == 1
        clock.advance(6)
    assert [e.type for e in service.events_after(0)] == ["status.observed"]
    assert sim.stats()["connections"] == 1  # keep-alive: one TCP connection for all polls


def test_500_storm_backs_off_then_fails_then_recovers(service, sim, clock):
    """Exponential backoff between failures, poll.failing once, poll.recovered after."""
    sim.billit.create_order(1001)
    item = service.track("billit", "1001", interval_s=5)
    poll_round(service)
    clock.advance(6)
    sim.faults.add("billit", "500")
    gaps = []
    for _ in range(5):
        before = clock()
        poll_round(service)
        (it,) = service.items()
        gaps.append((it.next_poll_at - before).total_seconds())
        next_due(service, clock)
    assert it.consecutive_failures == 5 and it.failing and "answered 500" in it.last_error
    ladder = [(1, 2), (2, 4), (4, 8), (8, 16), (16, 32)]  # base 2: [ceiling/2, ceiling]
    assert all(lo <= g <= hi for g, (lo, hi) in zip(gaps, ladder, strict=True)), gaps
    sim.faults.clear()
    poll_round(service)
    types = [e.type for e in service.events_after(0)]
    assert types == ["status.observed", "poll.failing", "poll.recovered"]
    failing = service.events_after(0)[1]
    assert failing.data["consecutive_failures"] == 3 and "500" in failing.data["error"]
    (it,) = service.items()
    assert it.consecutive_failures == 0 and not it.failing and it.id == item.id


def test_429_retry_after_is_honoured(service, sim, clock):
    """A 429 with Retry-After: 45 schedules the next poll no earlier than 45 s later."""
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    sim.faults.add("billit", "429", count=1, retry_after=45)
    poll_round(service)
    (it,) = service.items()
    assert it.next_poll_at >= clock() + timedelta(seconds=45)
    assert "answered 429" in it.last_error and it.consecutive_failures == 1
    clock.advance(44)
    assert poll_round(service) == 0
    clock.advance(2)
    assert poll_round(service) == 1
    assert [e.type for e in service.events_after(0)] == ["status.observed"]


@pytest.mark.parametrize(("kind", "message", "retryable"), [
    ("slow", "timed out after 0.5s", True),
    ("503", "answered 503", True),
    ("malformed", "not JSON", False),
    ("html", "not JSON (text/html", False),
    ("401", "answered 401", False),
])
def test_faults_are_classified_and_recorded(service, sim, clock, kind, message, retryable):
    """Each fault is recorded on the item with a readable message and the right backoff."""
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    sim.faults.add("billit", kind, count=1, delay=1.5)
    poll_round(service)
    (it,) = service.items()
    assert message in it.last_error and it.consecutive_failures == 1 and it.state == "active"
    wait = (it.next_poll_at - clock()).total_seconds()
    # retryable: first backoff step (1-2 s); not retryable: the cap (30-60 s)
    assert (1 <= wait <= 2) if retryable else (30 <= wait <= 60)
    next_due(service, clock)
    poll_round(service)
    # No retry fixes a non-retryable failure, so it alerts at once (issue 9 #5) and recovers after;
    # refused credentials also alert once for the account.
    expected = ["status.observed"] if retryable else ["poll.failing", "poll.recovered", "status.observed"]
    if kind == "401":
        expected = ["poll.failing", "provider.auth_failed", "poll.recovered", "status.observed",
                    "provider.auth_recovered"]
    assert [e.type for e in service.events_after(0)] == expected


def test_404_marks_item_gone(service, sim, clock):
    """An order the provider does not know becomes item.gone and is no longer polled."""
    item = service.track("billit", "4242", interval_s=5)
    poll_round(service)
    (it,) = service.items()
    assert it.state == "gone" and it.next_poll_at is None and "NotFound" in it.last_error
    (event,) = service.events_after(0)
    assert event.type == "item.gone" and event.data["item_id"] == item.id
    clock.advance(3600)
    assert poll_round(service) == 0


def test_wrong_api_key_is_not_retried_fast_and_key_never_logged(engine, sim, clock):
    """401 from a wrong key: a clear, non-retryable error that does not contain the key."""
    settings = BillitSettings(base_url=sim.url, api_key="wrong-secret-key-123", party_id="1234")
    service = PollerService(make_sessionmaker(engine), ProviderSet({"billit": settings}), POLICY, clock=clock)
    sim.billit.create_order(1001)
    error = first_poll_error(service, "billit", "1001")
    assert "401" in error and "Unauthorized" in error
    assert "wrong-secret-key-123" not in error


def test_unconfigured_provider_names_the_setting(engine, sim, clock):
    """Polling billit without an API key records which variable to set."""
    service = PollerService(make_sessionmaker(engine), ProviderSet({"billit": BillitSettings(
        base_url=sim.url)}), POLICY, clock=clock)
    error = first_poll_error(service, "billit", "1001")
    assert "POLLER_BILLIT__API_KEY" in error and "POLLER_BILLIT__PARTY_ID" in error


def test_track_validation(service):
    """Bad input is refused with a message naming what was wrong; nothing is stored."""
    with pytest.raises(InputError, match="unknown provider 'nope'"):
        service.track("nope", "1", interval_s=5)
    with pytest.raises(InputError, match="numeric OrderID"):
        service.track("billit", "abc", interval_s=5)
    with pytest.raises(InputError, match="interval"):
        service.track("billit", "1", interval_s=0)
    with pytest.raises(InputError, match="no kind 'case'"):
        service.track("billit", "1", interval_s=5, kind="case")
    service.track("billit", "0017", interval_s=5)
    with pytest.raises(DuplicateItemError, match="already tracked"):
        service.track("billit", "17", interval_s=5)
    assert [(i.ref, i.kind) for i in service.items()] == [("17", "order")]


def test_pause_resume_and_untrack(service, sim, clock, engine):
    """Paused items are not polled; untracking removes the item but keeps its events."""
    sim.billit.create_order(1001)
    item = service.track("billit", "1001", interval_s=5)
    poll_round(service)
    catalog = Catalog(service.sessions, service.providers, default_interval_s=60, clock=clock)
    catalog.change(item.id, paused=True)
    clock.advance(60)
    assert poll_round(service) == 0
    catalog.change(item.id, paused=False)
    assert poll_round(service) == 1
    catalog.untrack(item.id)
    assert service.items() == []
    with make_sessionmaker(engine).begin() as s:
        assert s.scalar(select(Item).where(Item.id == item.id)) is None
        assert s.scalars(select(Snapshot)).all() == []
        assert len(s.scalars(select(Event)).all()) == 1


def test_poll_past_lease_deadline_is_skipped(service, sim, clock):
    """Items whose lease ended before their turn in the chunk are left for the next dispatch."""
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    claims = []
    service.dispatch_due(claims.extend, lease_s=30, limit=10, chunk_size=10)
    report = service.poll_claims(claims, deadline=clock() - timedelta(seconds=1))
    assert report.skipped == 1 and report.polled == 0
    assert sim.stats()["requests"].get("billit", {}).get("total", 0) == 0


def test_chunk_deadline_ends_before_its_items_can_be_claimed_again(engine, sim):
    """A dispatch claims items half a tick before they are due, so a chunk's deadline is the end
    of its lease less that: a poll started later would run beside the next claim's poll of the
    same item (two GETs milliseconds apart, seen in the topology test)."""
    from datetime import datetime

    from tasks import send_due
    from worker.store import repo

    settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234")
    service = PollerService(make_sessionmaker(engine), ProviderSet({"billit": settings}), POLICY)  # the wall clock
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    sent: list[dict] = []

    class Recorder:  # where the Celery task would be: what the chunk is sent with
        def apply_async(self, **message):
            sent.append(message)

    assert send_due("polls", service.dispatch_due, Recorder(), lambda c: [c.item_id, c.lease_id], lease_s=30,
                    event="dispatch.tick", limit=10, chunk_size=10, lookahead_s=5) == 1
    (message,) = sent
    deadline = datetime.fromisoformat(message["args"][1])
    assert message["expires"] == deadline
    with service.sessions.begin() as session:  # the next dispatch, just before the chunk's deadline
        assert repo.claim_due(session, now=deadline - timedelta(milliseconds=1), lease_s=30, limit=10,
                              lookahead_s=5) == []


def test_a_providers_own_timeout_overrides_the_http_timeout(engine, sim, clock):
    """POLLER_<P>__TIMEOUT_SECONDS is the deadline of that provider's calls (it was read and then
    ignored: every call had POLLER_HTTP_TIMEOUT_SECONDS)."""
    settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234", timeout_seconds=0.3)
    service = PollerService(make_sessionmaker(engine), ProviderSet(
        {"billit": settings}, ProviderContext(http=HttpOptions(timeout_s=10), clock=clock)), POLICY, clock=clock)
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    sim.faults.add("billit", "slow", delay=3)
    poll_round(service)
    (it,) = service.items()
    assert "timed out after 0.3s" in it.last_error


def test_oversized_body_is_a_clear_error(engine, sim, clock):
    """A response larger than the cap is refused, named, and not parsed."""
    settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234")
    service = PollerService(make_sessionmaker(engine), ProviderSet(
        {"billit": settings}, ProviderContext(http=HttpOptions(max_body_bytes=100), clock=clock)), POLICY, clock=clock)
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    poll_round(service)
    (it,) = service.items()
    assert "response body larger than 100 bytes" in it.last_error
    assert [e.type for e in service.events_after(0)] == ["poll.failing"]  # not retryable: alerts at once


def test_a_chunk_polled_on_threads_gives_each_event_once(engine, sim, clock):
    """Eight threads polling one chunk of 24 orders: one observation each, counted right."""
    settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234",
                              rate_limit_per_second=None)
    service = PollerService(make_sessionmaker(engine), ProviderSet({"billit": settings}, ProviderContext(
        http=HttpOptions(timeout_s=2), clock=clock)), POLICY, clock=clock, threads=8)
    for n in range(24):
        sim.billit.create_order(3000 + n)
        service.track("billit", str(3000 + n), interval_s=5)
    reports = []
    service.dispatch_due(lambda chunk: reports.append(service.poll_claims(chunk)), lease_s=30, limit=100,
                         chunk_size=100)
    (report,) = reports
    assert (report.polled, report.changed, len(report.events)) == (24, 24, 24)
    events = service.events_after(0)
    assert sorted(e.item_id for e in events) == list(range(1, 25)) and {e.seq for e in events} == {1}
