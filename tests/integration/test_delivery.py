"""Webhook and SQL-sink delivery on a real database to a real receiver over loopback.

Time is injected: the Svix schedule (about 27.6 hours) runs in milliseconds. Every delivery is
verified by the reference standardwebhooks library and validated against docs/event.schema.json.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.stack import VALIDATOR, Stack
from worker.delivery import DeliveryPolicy
from worker.errors import InputError
from worker.sinks.sql import SqlSink
from worker.store.db import sqlite_url
from worker.store.models import Delivery, DeliveryAttempt, Subscription
from worker.webhooks.decision import SVIX_SCHEDULE


def per_item(received):
    out: dict[int, list[int]] = {}
    for r in received:
        data = r.json["data"]
        out.setdefault(data["item_id"], []).append(r.json)
    return out


def test_signed_deliveries_in_order_with_the_schema(stack, receiver):
    """Each event arrives once, verified with the reference library, webhook-id = event id, body per
    the schema, in order per item; every attempt is recorded."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    assert secret.startswith("whsec_")
    stack.orders(3, stages=2)
    assert stack.deliver() == 9
    got = receiver.wait_for(9)
    assert all(r.verified_with == [0] for r in got)
    events = {e.id: e for e in stack.poller.events_after(0)}
    assert sorted(r.webhook_id for r in got) == sorted(events)
    for r in got:
        VALIDATOR.validate(r.json)
        assert r.json["type"] == events[r.webhook_id].type and r.json["data"] == events[r.webhook_id].data
    for item_events in per_item(got).values():
        assert [e["data"]["status"] for e in item_events] == ["to_send", "pending_delivery", "delivered"]
    attempts = stack.rows(DeliveryAttempt)
    assert len(attempts) == 9 and {a.status_code for a in attempts} == {200} and all(a.latency_ms > 0 for a in attempts)
    assert {d.state for d in stack.rows(Delivery)} == {"succeeded"}
    assert stack.deliver() == 0


def test_receiver_down_for_the_whole_schedule_then_up(stack, receiver):
    """503 for ~27.6 h: every delivery is tried 8 times on the Svix schedule, the second event of an
    item never before the first is settled, all end failed; after a replay everything arrives, in
    order per item, with the original webhook-ids."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    receiver.default_status = 503
    items = stack.orders(2, stages=1)
    start = stack.clock()
    while stack.next_due():
        stack.deliver()
    deliveries = stack.rows(Delivery)
    assert {d.state for d in deliveries} == {"failed"} and {d.attempts for d in deliveries} == {8}
    attempts = stack.rows(DeliveryAttempt)
    assert len(attempts) == 4 * 8 and {a.fault for a in attempts} == {"unavailable"}
    # The Svix schedule, +-10 % jitter: gaps between one delivery's attempts.
    first = sorted((a for a in attempts if a.delivery_id == deliveries[0].id), key=lambda a: a.id)
    gaps = [(b.attempted_at - a.attempted_at).total_seconds() for a, b in zip(first, first[1:], strict=False)]
    assert all(0.9 * want <= got <= 1.1 * want + 61 for got, want in zip(gaps, SVIX_SCHEDULE, strict=True)), gaps
    # Order: per item, every attempt of event 1 precedes every attempt of event 2.
    by_id = {r.webhook_id: [] for r in receiver.received}
    for n, r in enumerate(receiver.received):
        by_id[r.webhook_id].append(n)
    events = stack.poller.events_after(0)
    for item in items:
        first_ev, second_ev = [e.id for e in events if e.item_id == item]
        assert max(by_id[first_ev]) < min(by_id[second_ev])
    total = (stack.clock() - start).total_seconds()
    assert 0.9 * sum(SVIX_SCHEDULE) <= total <= 1.1 * sum(SVIX_SCHEDULE) * 2
    (sub_row,) = stack.rows(Subscription)
    assert sub_row.state == "active" and sub_row.failing_since is not None  # 27.6 h < 5 days
    receiver.default_status = 200
    assert stack.subs.replay(start - timedelta(hours=1)) == 4
    stack.deliver()
    ok = receiver.ok()
    assert sorted(r.webhook_id for r in ok) == sorted(e.id for e in events)
    for item_events in per_item(ok).values():
        assert [e["data"]["status"] for e in item_events] == ["to_send", "pending_delivery"]


def disabled_count(reason: str) -> float:
    """poller_subscriptions_disabled_total{reason} in this process's registry."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("poller_subscriptions_disabled_total", {"reason": reason}) or 0.0


def test_subscription_disabled_after_five_days_without_success(stack, receiver):
    """Failing without one success for POLLER_WEBHOOK_DISABLE_AFTER disables the subscription;
    operators see it in the metric, and in subscription.disabled, which other subscriptions get."""
    before = disabled_count("failing")
    dead, _ = stack.subs.add(receiver.url + "?dead=1")
    watcher, secret = stack.subs.add(receiver.url.replace("/hook", "/watch"), types=["subscription.disabled"])
    receiver.secrets = [secret]
    receiver.default_status = 500
    stack.orders(1, stages=0)
    stack.deliver()
    stack.clock.advance(5 * 24 * 3600 + 1)
    stack.subs.redeliver(stack.poller.events_after(0)[0].id, dead.id)
    stack.deliver()
    subs = {s.id: s for s in stack.rows(Subscription)}
    assert subs[dead.id].state == "disabled" and "no successful delivery since" in subs[dead.id].disabled_reason
    disabled = [e for e in stack.poller.events_after(0) if e.type == "subscription.disabled"]
    assert len(disabled) == 1 and disabled[0].data["subscription_id"] == dead.id
    assert "?dead" not in disabled[0].data["url"]  # query strings can hold tokens
    assert disabled_count("failing") == before + 1
    receiver.default_status = 200
    stack.deliver()
    notice = [r for r in receiver.ok() if r.json["type"] == "subscription.disabled"]
    assert len(notice) == 1 and notice[0].verified_with == [0]
    VALIDATOR.validate(notice[0].json)


def test_410_disables_at_once_and_nothing_is_dropped(stack, receiver):
    """410 Gone disables the subscription at once; its other deliveries wait, and go out on enable."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    stack.orders(1, stages=1)
    receiver.plan(410)
    before = disabled_count("gone")
    stack.deliver()
    (row,) = stack.rows(Subscription)
    assert row.state == "disabled" and "410" in row.disabled_reason
    assert disabled_count("gone") == before + 1
    assert [d.state for d in stack.rows(Delivery)] == ["failed", "pending"]
    stack.clock.advance(3600)
    assert stack.deliver() == 0
    stack.subs.set_enabled(sub.id, True)
    stack.deliver()
    assert len(receiver.ok()) == 1


def test_500_then_200_429_retry_after_and_slow(stack, receiver):
    """A 500 is retried after ~5 s; a 429's Retry-After (120 s) is honoured; a receiver slower than
    the timeout is a timeout, retried."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    stack.orders(1, stages=0)
    receiver.plan(500)
    stack.deliver()
    (d,) = stack.rows(Delivery)
    assert 4.5 <= (d.next_attempt_at - stack.clock()).total_seconds() <= 5.5
    receiver.plan(429, headers={"Retry-After": "120"})
    stack.next_due()
    stack.deliver()
    (d,) = stack.rows(Delivery)
    assert (d.next_attempt_at - stack.clock()).total_seconds() >= 120
    slow = Stack(stack.poller.sessions.kw["bind"], stack.sim, stack.clock, timeout_s=0.3)
    receiver.plan(200, delay=1.0)
    stack.next_due()
    slow.deliver()
    stack.next_due()
    slow.deliver()
    attempts = stack.rows(DeliveryAttempt)
    assert [(a.status_code, a.outcome, a.fault) for a in attempts] == [
        (500, "retry", "unavailable"), (429, "retry", "unavailable"), (None, "retry", "unavailable"),
        (200, "success", None)]
    assert "timed out after 0.3s" in attempts[2].error


def test_subscriber_faults_are_retried_and_named(stack, receiver):
    """A 3xx or 4xx is retried too, but recorded as the subscriber's fault, with the response body."""
    stack.subs.add(receiver.url)
    stack.orders(1, stages=0)
    receiver.plan(400)
    stack.deliver()
    (a,) = stack.rows(DeliveryAttempt)
    assert (a.status_code, a.outcome, a.fault) == (400, "retry", "subscriber") and "nope" in a.response_excerpt


def test_one_failing_item_does_not_hold_up_others(stack, receiver):
    """Item A's first event keeps failing; A's later event waits, item B's events go through."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    a, b = stack.orders(2, stages=1)
    events = stack.poller.events_after(0)
    a_first = next(e.id for e in events if e.item_id == a)
    receiver.plan(500, times=3, match=a_first)
    stack.deliver()
    sent = [r.webhook_id for r in receiver.received]
    assert a_first in sent and len(sent) == 3  # A's second event held back
    assert {r.json["data"]["item_id"] for r in receiver.ok()} == {b}
    stack.next_due()
    stack.deliver()
    stack.next_due()
    stack.deliver()
    stack.next_due()
    stack.deliver()
    assert [r.json["data"]["status"] for r in receiver.ok() if r.json["data"]["item_id"] == a] == [
        "to_send", "pending_delivery"]


def test_rotated_secret_signs_alongside_the_old_one(stack, receiver):
    """After rotate-secret both secrets verify during the grace period; only the new one after."""
    sub, old = stack.subs.add(receiver.url)
    new = stack.subs.rotate_secret(sub.id, timedelta(hours=24))
    receiver.secrets = [old, new]
    stack.orders(1, stages=0)
    stack.deliver()
    (r,) = receiver.wait_for(1)
    assert r.verified_with == [0, 1] and len(r.headers["webhook-signature"].split()) == 2
    stack.clock.advance(25 * 3600)
    stack.subs.redeliver(stack.poller.events_after(0)[0].id)
    stack.deliver()
    assert receiver.wait_for(2)[1].verified_with == [1]


def test_private_targets_are_refused_without_the_setting(engine, sim, clock, stack, receiver):
    """Loopback, private, link-local and metadata targets are refused when added, and at delivery
    time (DNS can change after a subscription was accepted)."""
    strict = Stack(engine, sim, clock, policy=DeliveryPolicy(allow_http=True, allow_private=False))
    for url in ("http://127.0.0.1/x", "http://10.0.0.8/x", "http://169.254.169.254/latest/meta-data",
                "http://[::1]/x", "http://metadata.google.internal/x", "http://192.168.1.5/x"):
        with pytest.raises(InputError, match="metadata|loopback|private|link-local"):
            strict.subs.add(url)
    with pytest.raises(InputError, match="must use https"):
        Stack(engine, sim, clock, policy=DeliveryPolicy()).subs.add("http://example.com/x")
    stack.subs.add(receiver.url)  # accepted where private targets are allowed
    strict.orders(1, stages=0)
    strict.deliver()
    (a,) = strict.rows(DeliveryAttempt)
    assert a.status_code is None and "refused" in a.error and "loopback" in a.error
    assert receiver.received == []


@pytest.fixture
def sink_url(request, tmp_path, pg_admin_url):
    """The sink's database: a SQLite file, or a fresh PostgreSQL database when the poller's is one."""
    db_url = request.getfixturevalue("db_url")
    if db_url.startswith("sqlite"):
        yield sqlite_url(tmp_path / "sink.db")
        return
    from tests.conftest import _drop_pg_database, _fresh_pg_database

    url = _fresh_pg_database(pg_admin_url)
    yield url
    _drop_pg_database(pg_admin_url, url)


def test_sql_sink_gets_each_event_once_even_when_a_batch_is_retried(engine, sim, clock, sink_url):
    """A sink write whose worker died before recording it is retried after the lease, and the
    table still has each event exactly once."""
    sink = SqlSink(sink_url, table="downstream_events")
    stack = Stack(engine, sim, clock, sink=sink)
    stack.subs.ensure_sink()
    stack.orders(2, stages=2)
    events = stack.poller.events_after(0)
    # A worker claims and writes, then dies before recording the attempt.
    claims = []
    stack.delivery.dispatch_due(claims.extend, lease_s=60, limit=100, chunk_size=100)
    from worker.store import deliveries as drepo

    with stack.sessions.begin() as s:
        work = drepo.load_work(s, claims, now=clock())
    stack.delivery._to_sink(work)
    clock.advance(61)
    assert stack.deliver() == len(events)
    with sink.engine.connect() as conn:
        rows = conn.execute(select(sink.table.c.id, sink.table.c.type, sink.table.c.seq)).all()
    assert sorted(r.id for r in rows) == sorted(e.id for e in events)
    assert {d.state for d in stack.rows(Delivery)} == {"succeeded"}
    sink.engine.dispose()

