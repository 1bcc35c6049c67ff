"""Issue 12: a chunk of polls is admitted, fetched, recorded and written together, and stays as
safe as one poll at a time was (leases, per-item results, the breaker's bound on a storm)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
import redis
import structlog
from sqlalchemy import select, update

from tests.rows import update_items
from worker.capacity import CapacityWatch, limits_of
from worker.guard import BreakerPolicy, RedisGuard
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store import repo
from worker.store.db import make_sessionmaker
from worker.store.models import Event, Item, Schedule

POLICY = PollPolicy(backoff_base_s=2, backoff_max_s=60, jitter_ratio=0.1, failing_after=3)


def make_service(engine, sim, clock, *, guard=None, threads=4, **billit) -> PollerService:
    settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234", **billit)
    providers = ProviderSet({"billit": settings}, ProviderContext(http=HttpOptions(timeout_s=2), clock=clock))
    return PollerService(make_sessionmaker(engine), providers, POLICY, clock=clock, rng=random.Random(5),
                         guard=guard, threads=threads, reads=make_sessionmaker(engine, read_only=True))


@pytest.fixture
def client(broker_url):
    c = redis.Redis.from_url(broker_url)
    yield c
    c.close()


def track(service, sim, refs, interval_s=60.0):
    for ref in refs:
        sim.billit.create_order(ref)
        service.track("billit", str(ref), interval_s=interval_s)


def claim_all(service, limit=100):
    with service.sessions.begin() as s:
        return repo.claim_due(s, now=service.clock(), lease_s=30, limit=limit)


def test_a_chunk_writes_unchanged_and_changed_polls_and_skips_lost_leases(engine, sim, clock):
    """Twenty items in one chunk: the first round observes each; the second changes nothing
    except one order that moved, and one item re-claimed meanwhile is not written."""
    service = make_service(engine, sim, clock)
    track(service, sim, range(3001, 3021))
    first = service.poll_claims(claim_all(service))
    assert (first.polled, first.changed, first.lost_lease) == (20, 20, 0)
    clock.advance(70)  # past every item's interval and its jitter
    sim.billit.set_stage(3005, sim.billit.stage_of(3005) + 1)
    claims = claim_all(service)
    stolen = claims[3]
    adapter = service.providers.get("billit")
    fetch = adapter.fetch

    def fetch_while_reclaimed(item, version):
        if item.id == stolen.item_id:  # another dispatcher re-claims it while its call is in flight
            with service.sessions.begin() as s:
                update_items(s, Item.id == item.id, lease_id=Schedule.lease_id + 1)
        return fetch(item, version)

    adapter.fetch = fetch_while_reclaimed
    report = service.poll_claims(claims)
    assert report.polled == 20 and report.lost_lease == 1 and report.changed == 1
    items = {i.id: i for i in service.items()}
    assert items[stolen.item_id].lease_id == stolen.lease_id + 1  # the thief's lease, untouched by the lost poll
    assert items[stolen.item_id].last_polled_at == clock() - timedelta(seconds=70)
    for claim in claims:
        if claim is not stolen:
            item = items[claim.item_id]
            assert item.last_polled_at == clock() and item.claims_since_poll == 0 and item.due_since is None
            assert item.next_poll_at >= clock() + timedelta(seconds=50)
    with service.sessions.begin() as s:
        seqs = s.execute(select(Event.item_id, Event.seq)).all()
    assert len(seqs) == len(set(seqs))  # each item's events numbered once


def test_one_write_that_fails_lands_on_its_item_alone(engine, sim, clock):
    """If the chunk's transaction fails, each result is written on its own: the item whose write
    fails is marked failed, the others are stored normally."""
    service = make_service(engine, sim, clock)
    track(service, sim, range(3101, 3106))
    claims = claim_all(service)
    bad = claims[2].item_id
    original = repo.apply_outcome

    def refuse_one(session, claim, outcome, **kw):
        if claim.item_id == bad and outcome.snapshot is not None:
            raise ValueError("refused by a constraint")
        return original(session, claim, outcome, **kw)

    repo.apply_outcome = refuse_one
    try:
        report = service.poll_claims(claims)
    finally:
        repo.apply_outcome = original
    items = {i.id: i for i in service.items()}
    assert report.polled == 5 and report.changed == 4
    assert "could not store the result" in (items[bad].last_error or "")
    assert all(items[c.item_id].last_status for c in claims if c.item_id != bad)


def test_a_storm_costs_the_breaker_minimum_even_on_many_threads(engine, sim, clock, client):
    """Forty items of one account in one chunk on eight threads while the provider answers 500:
    the chunk stops calling once the breaker's minimum failed (a few more may be in flight), and
    the rest are deferred, not failed."""
    policy = BreakerPolicy(window_s=60, min_calls=5, failure_ratio=0.5, cooldown_s=30, max_cooldown_s=60)
    guard = RedisGuard(client, policy)
    guard.reset("billit", "default")
    service = make_service(engine, sim, clock, guard=guard, threads=8, rate_limit_per_second=1000,
                           rate_limit_burst=1000)
    track(service, sim, range(3201, 3241))
    sim.faults.add("billit", "500")
    report = service.poll_claims(claim_all(service))
    calls = sim.stats()["requests"]["billit"]["total"]
    assert 5 <= calls <= 5 + 8, calls  # at most one more per thread, already on its way
    assert report.polled == calls and report.deferred == 40 - calls
    assert sum(i.consecutive_failures for i in service.items()) == calls
    assert [e.type for e in service.events_after(0)] == ["provider.paused"]
    assert not guard.admit("billit", "default").go


def test_a_guard_store_down_fails_open_loudly_not_onto_the_items(engine, sim, clock):
    """The rate limit and breaker store (the broker's Redis) unreachable: the chunk's polls still
    go (the items stay healthy, their events are written), and each chunk logs an error; the items
    are not failed and backed off as if the provider had answered badly."""
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1, socket_timeout=1)
    service = make_service(engine, sim, clock, guard=RedisGuard(dead, BreakerPolicy()))
    track(service, sim, range(3301, 3306))
    with structlog.testing.capture_logs() as logs:
        report = service.poll_claims(claim_all(service))
    assert (report.polled, report.changed, report.failed) == (5, 5, 0)
    assert all(i.consecutive_failures == 0 and i.last_error is None for i in service.items())
    assert [(e["log_level"], e["polls"]) for e in logs if e["event"] == "poll.guard_unavailable"] == [("error", 5)]


def test_rate_limited_chunk_goes_in_turn(engine, sim, clock, client):
    """A chunk larger than the account's burst: the burst goes at once, the slots that fit the
    wait go after it, the rest are deferred one slot apart (not all to the same instant)."""
    guard = RedisGuard(client, BreakerPolicy())
    guard.reset("billit", "default")
    slept: list[float] = []
    service = make_service(engine, sim, clock, guard=guard, threads=1, rate_limit_per_second=10,
                           rate_limit_burst=3)
    service.sleep = slept.append
    service.max_throttle_wait_s = 0.25
    track(service, sim, range(3301, 3311))
    report = service.poll_claims(claim_all(service))
    assert report.polled == 5 and report.deferred == 5  # 3 at once, 2 within 0.25 s
    assert slept and max(slept) <= 0.25
    deferred = sorted(i.next_poll_at for i in service.items() if i.last_polled_at is None)
    gaps = [(b - a).total_seconds() for a, b in zip(deferred, deferred[1:], strict=False)]
    assert all(g == pytest.approx(0.1, abs=0.02) for g in gaps), gaps


def test_capacity_names_the_account_over_its_limit_once(engine, sim, clock):
    """2,000 polls/s asked of a 5/s account: status and the watch say so, and the warning is
    logged once, not once per check; it clears when the need falls within the limit."""
    service = make_service(engine, sim, clock)
    track(service, sim, range(3401, 3411), interval_s=0.5)  # 10 items x 2/s = 20 polls/s
    watch = CapacityWatch(service.reads, limits_of(service.providers), every_s=0)
    with structlog.testing.capture_logs() as logs:
        need = watch.check()
        watch.check()
    assert need is not None
    (billit,) = need
    assert (billit.items, billit.required_per_s, billit.limit_per_s) == (10, 20.0, 5.0)
    assert billit.over and billit.slowdown == 4.0
    assert billit.setting == "POLLER_BILLIT__RATE_LIMIT_PER_SECOND"
    warnings = [entry for entry in logs if entry["event"] == "capacity.exceeded"]
    assert len(warnings) == 1 and warnings[0]["required_polls_per_second"] == 20.0
    with service.sessions.begin() as s:
        s.execute(update(Item).values(interval_s=60.0))
    with structlog.testing.capture_logs() as logs:
        (billit,) = watch.check() or []
    assert not billit.over and [e["event"] for e in logs] == ["capacity.ok"]
