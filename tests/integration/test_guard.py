"""Rate limits and circuit breakers shared through a real Redis."""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest
import redis

from worker.catalog import Catalog
from worker.guard import BreakerPolicy, RedisGuard
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store.db import make_sessionmaker

FAST = BreakerPolicy(window_s=60, min_calls=4, failure_ratio=0.5, cooldown_s=0.3, max_cooldown_s=2)


@pytest.fixture
def client(broker_url):
    c = redis.Redis.from_url(broker_url)
    yield c
    c.close()


def wait_until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)  # re-check interval of a condition wait


def test_throttle_bursts_then_spaces_calls(client):
    """Burst 2 at 5/s: two calls go at once, the third waits ~0.2 s, and a call that would wait
    longer than allowed takes no slot."""
    guard = RedisGuard(client)
    got = [guard.throttle("billit", "default", rate=5, burst=2, max_wait_s=1) for _ in range(3)]
    assert got[:2] == [0, 0] and 0.15 <= got[2] <= 0.2
    deferred = guard.throttle("billit", "default", rate=5, burst=2, max_wait_s=0.1)
    assert deferred > 0.1
    # the deferred call did not reserve: the next one waits about as long as it did, not longer
    assert guard.throttle("billit", "default", rate=5, burst=2, max_wait_s=1) <= deferred + 0.01


def test_buckets_are_per_account(client):
    """One account's limit does not slow another's."""
    guard = RedisGuard(client)
    assert guard.throttle("billit", "a", rate=1, burst=1, max_wait_s=5) == 0
    assert guard.throttle("billit", "b", rate=1, burst=1, max_wait_s=5) == 0
    assert guard.throttle("billit", "a", rate=1, burst=1, max_wait_s=5) > 0.9


def test_breaker_opens_once_under_concurrency_then_probes_and_closes(client):
    """Eight workers failing at once open the breaker exactly once; after the cooldown one probe
    goes, and its success closes the breaker."""
    guard = RedisGuard(client, FAST)
    transitions = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(3):
            t = guard.record("amili_ada", "default", ok=False, probe=False)
            if t:
                transitions.append(t)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [t.kind for t in transitions] == ["opened"]
    assert transitions[0].calls >= 4
    blocked = guard.admit("amili_ada", "default")
    assert not blocked.go and blocked.defer_until_ms
    wait_until(lambda: guard.admit("amili_ada", "default").go is True or None)
    # the call that got through was the single probe; others keep waiting
    assert not guard.admit("amili_ada", "default").go
    assert guard.record("amili_ada", "default", ok=False, probe=True).kind == "reopened"
    wait_until(lambda: guard.admit("amili_ada", "default").probe)
    assert guard.record("amili_ada", "default", ok=True, probe=True).kind == "closed"
    assert guard.admit("amili_ada", "default").go


def test_successes_keep_the_breaker_closed(client):
    """A minority of failures does not pause the provider."""
    guard = RedisGuard(client, FAST)
    for ok in (True, True, False, True, True, False, True):
        assert guard.record("billit", "default", ok=ok, probe=False) is None
    assert guard.admit("billit", "default").go


def test_storm_pauses_provider_with_one_event_and_resumes(engine, sim, client):
    """A 500 storm over many items pauses the provider (deferring polls, not failing each item),
    writes provider.paused once, and provider.resumed once the provider answers again."""
    settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234",
                              rate_limit_per_second=1000, rate_limit_burst=1000)
    guard = RedisGuard(client, FAST)
    service = PollerService(make_sessionmaker(engine), ProviderSet(
        {"billit": settings}, ProviderContext(http=HttpOptions(timeout_s=2))),
        PollPolicy(backoff_base_s=0.01, backoff_max_s=0.02, failing_after=100), rng=random.Random(3), guard=guard)
    for ref in range(2001, 2013):
        sim.billit.create_order(ref)
        service.track("billit", str(ref), interval_s=60)
    sim.faults.add("billit", "500")
    report = service.dispatch_due(service.poll_claims, lease_s=30, limit=100, chunk_size=100)
    assert report == 12
    types = [e.type for e in service.events_after(0)]
    assert types == ["provider.paused"]
    paused = service.events_after(0)[0]
    assert paused.item_id is None and paused.data["provider"] == "billit" and "500" in paused.data["error"]
    billit_calls = sim.stats()["requests"]["billit"]["total"]
    assert billit_calls == FAST.min_calls  # the rest were deferred without a call
    items = service.items()
    assert sum(i.consecutive_failures for i in items) == FAST.min_calls
    sim.faults.clear()
    wait_until(lambda: guard.admit("billit", "default").probe or None)
    guard.client.delete("poller:guard:billit:default:probe")  # the check above took the probe slot
    catalog = Catalog(service.sessions, service.providers, default_interval_s=60)
    for item in items:  # everything due again
        catalog.change(item.id, paused=True)
        catalog.change(item.id, paused=False)
    service.dispatch_due(service.poll_claims, lease_s=30, limit=100, chunk_size=100)
    types = [e.type for e in service.events_after(0)]
    assert types.count("provider.paused") == 1 and types.count("provider.resumed") == 1
    assert types.index("provider.resumed") < types.index("status.observed")


def two_claimed_orders(engine, sim, client, **settings):
    """A service whose Billit allows one call a second (burst 1), and its claims of two orders."""
    billit = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234",
                            rate_limit_per_second=1, rate_limit_burst=1, **settings)
    service = PollerService(make_sessionmaker(engine), ProviderSet(
        {"billit": billit}, ProviderContext(http=HttpOptions(timeout_s=10))), PollPolicy(),
        guard=RedisGuard(client, FAST), max_throttle_wait_s=5)
    for ref in (3001, 3002):
        sim.billit.create_order(ref)
        service.track("billit", str(ref), interval_s=60)
    claims: list = []
    service.dispatch_due(claims.extend, lease_s=30, limit=10, chunk_size=10)
    return service, claims


def test_a_rate_limit_wait_past_the_deadline_skips_the_poll(engine, sim, client):
    """A poll that would wait for its rate-limit slot beyond the chunk's deadline is not polled
    late (beside the next claim's poll of it) but made due again at its slot."""
    service, claims = two_claimed_orders(engine, sim, client)
    started = service.clock()
    report = service.poll_claims(claims, deadline=started + timedelta(seconds=0.5))
    assert (report.polled, report.skipped, report.deferred) == (1, 1, 1)  # the second slot is a second away
    assert sim.stats()["requests"]["billit"]["total"] == 1
    # due again at its slot, not when its lease of 30 s runs out
    skipped = [i for i in service.items() if i.ref == "3002"][0]
    assert skipped.next_poll_at is not None and skipped.next_poll_at < started + timedelta(seconds=5)


def test_no_poll_starts_within_a_call_timeout_of_the_deadline(engine, sim, client):
    """The chunk writes after its last call, and from its deadline the items may be claimed again:
    a poll that could still run then is not started (here its provider's own 1 s timeout does not
    fit in what is left, so it must start in the first half of that: the slot 1 s away does not)."""
    service, claims = two_claimed_orders(engine, sim, client, timeout_seconds=1.0)
    report = service.poll_claims(claims, deadline=service.clock() + timedelta(seconds=1.8))
    assert (report.polled, report.skipped) == (1, 1)
    assert sim.stats()["requests"]["billit"]["total"] == 1
