"""Issue 9 #3: every provider call and webhook send has a total deadline (connect, headers, body).

A real loopback peer trickles one byte every 0.4 s, so requests' per-read timeout never fires;
the deadline must cut the call off, as an ordinary retryable failure, without holding back others.
"""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import select

from tests.peer import Answer, Peer, Request
from tests.receiver import Receiver
from worker.delivery import DeliveryPolicy, DeliveryService
from worker.errors import ProviderUnavailable
from worker.policy import PollPolicy
from worker.providers.base import HttpClient, HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import REGISTRY, ProviderSet
from worker.service import PollerService
from worker.store.db import make_sessionmaker
from worker.store.models import DeliveryAttempt, Subscription
from worker.subscriptions import Subscriptions
from worker.webhooks.sender import WebhookSender

DEADLINE = 1.2
#: Scheduling slack on a busy 2-core machine; the old code took 8 x 0.4 = 3.2 s or more.
SLACK = 1.0
ORDER = {"OrderID": 2, "OrderStatus": "ToSend"}


def route(request: Request) -> Answer:
    """/headers/... and /body/... trickle; everything else answers at once."""
    if "/headers" in request.path or request.path.endswith("/1"):
        return Answer(body=ORDER, trickle="headers")
    if "/body" in request.path:
        return Answer(body={"padding": "x" * 40}, trickle="body")
    if "/eof" in request.path:
        return Answer(body={"padding": "x" * 40}, trickle="body", length=False)
    return Answer(body=ORDER)


@pytest.fixture
def peer():
    with Peer(route, interval=0.4) as p:
        yield p


@pytest.mark.parametrize("path", ["/headers", "/body", "/eof"])
def test_provider_call_has_a_total_deadline(peer, path):
    """Issue 9 #3: a provider trickling its headers or body (with or without a length) is cut off
    at the total deadline, as a retryable ProviderUnavailable."""
    client = HttpClient("billit", peer.url(), HttpOptions(timeout_s=DEADLINE))
    started = time.monotonic()
    expected = rf"GET {path} timed out after {DEADLINE:g}s \(exceeded its total deadline\)"
    with pytest.raises(ProviderUnavailable, match=expected):
        client.request_json("GET", path)
    assert time.monotonic() - started < DEADLINE + SLACK


def test_deadline_also_covers_a_kept_alive_connection(peer):
    """Issue 9 #3: a connection reused from the pool (connected during an earlier call) is cut too."""
    client = HttpClient("billit", peer.url(), HttpOptions(timeout_s=DEADLINE))
    assert client.request_json("GET", "/fast")[1] == ORDER
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="total deadline"):
        client.request_json("GET", "/body")
    assert time.monotonic() - started < DEADLINE + SLACK
    assert client.request_json("GET", "/fast")[1] == ORDER  # the pool recovers
    assert len(peer.requests) == 3


@pytest.mark.parametrize("path", ["/headers", "/body"])
def test_webhook_send_has_a_total_deadline(peer, path):
    """Issue 9 #3: a subscriber trickling its answer gets a failed attempt at the deadline."""
    sender = WebhookSender(timeout_s=DEADLINE)
    started = time.monotonic()
    result = sender.post(peer.url(path), b"{}", {"content-type": "application/json"})
    assert time.monotonic() - started < DEADLINE + SLACK
    assert not result.ok and result.status_code is None
    assert result.error == f"timed out after {DEADLINE:g}s (exceeded its total deadline)"


def test_slow_provider_is_a_recorded_failure_and_holds_back_no_other_item(engine, peer, clock):
    """Issue 9 #3: through PollerService: the trickled item records the timeout (last error, a
    failure, backoff); the other item of the same chunk is polled, without waiting for it."""
    sessions = make_sessionmaker(engine)
    providers = ProviderSet({"billit": BillitSettings(base_url=peer.url(), api_key="k", party_id="1")},
                            ProviderContext(http=HttpOptions(timeout_s=DEADLINE), clock=clock))
    service = PollerService(sessions, providers, PollPolicy(backoff_base_s=2, failing_after=3), clock=clock,
                            rng=random.Random(3), threads=2)
    slow, fast = (service.track("billit", ref, interval_s=5).id for ref in ("1", "2"))
    started = time.monotonic()
    service.dispatch_due(service.poll_claims, lease_s=30, limit=10, chunk_size=10)
    assert time.monotonic() - started < DEADLINE + SLACK
    items = {i.id: i for i in service.items()}
    assert items[fast].last_status == "to_send" and items[fast].consecutive_failures == 0
    it = items[slow]
    assert it.consecutive_failures == 1 and not it.failing and it.state == "active"
    assert "GET /v1/orders/1 timed out after 1.2s (exceeded its total deadline)" in it.last_error
    assert it.next_poll_at > clock()  # backing off, not re-polled every lease


def test_slow_subscriber_is_a_recorded_failure_and_holds_back_no_other(engine, peer, clock, sim):
    """Issue 9 #3: through DeliveryService: the trickling subscriber's attempt records the timeout
    (fault "unavailable", retried, failure clock started); another subscriber gets its event at once."""
    receiver = Receiver().start()
    try:
        sessions = make_sessionmaker(engine)
        subs = Subscriptions(sessions, allow_http=True, allow_private=True, known_providers=tuple(REGISTRY),
                             clock=clock)
        slow_sub, _ = subs.add(peer.url("/headers"))
        fast_sub, _ = subs.add(receiver.url)
        poller = PollerService(sessions, ProviderSet({"billit": BillitSettings(
            base_url=sim.url, api_key="sim-billit-key", party_id="1234")}, ProviderContext(
            http=HttpOptions(timeout_s=2), clock=clock)), PollPolicy(), clock=clock, rng=random.Random(1))
        poller.track("billit", str(sim.billit.create_order()), interval_s=5)
        poller.dispatch_due(poller.poll_claims, lease_s=30, limit=10, chunk_size=10)
        delivery = DeliveryService(sessions, WebhookSender(timeout_s=DEADLINE),
                                   DeliveryPolicy(allow_http=True, allow_private=True), clock=clock,
                                   rng=random.Random(2), threads=4)
        started = time.monotonic()
        delivery.dispatch_due(delivery.deliver, lease_s=60, limit=100, chunk_size=100)
        assert time.monotonic() - started < DEADLINE + SLACK
        assert len(receiver.wait_for(1)) == 1
        with sessions.begin() as s:
            attempts = {a.delivery_id: a for a in s.scalars(select(DeliveryAttempt))}
            failed = [a for a in attempts.values() if a.status_code is None]
            assert len(attempts) == 2 and len(failed) == 1
            assert failed[0].error == "timed out after 1.2s (exceeded its total deadline)"
            assert (failed[0].outcome, failed[0].fault) == ("retry", "unavailable")
            assert s.get(Subscription, slow_sub.id).failing_since == clock()
            assert s.get(Subscription, fast_sub.id).failing_since is None
    finally:
        receiver.stop()
