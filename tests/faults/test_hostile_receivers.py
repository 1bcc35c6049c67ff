"""Issue 10 scenario 6: hostile webhook receivers, on an injected clock over real loopback HTTP.

Four subscribers get the same events (four orders through their lives):
- ``down``: connection refused through the whole retry schedule of every event, until the
  failure rule disables it (5 days without a success); then it comes back, an operator enables it
  and replays, and everything arrives, in order, with the same webhook-ids;
- ``slow``: its first answers come after the send deadline (the attempt fails, though the receiver
  did process the request: a duplicate later, which at-least-once allows);
- ``flaky``: 500s, a 429 with Retry-After, a 503 with an unreadable Retry-After, then 200;
- ``trickle``: its first answers arrive one byte at a time, past the deadline.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from tests.faults.harness import report
from tests.peer import Answer, Peer
from tests.receiver import Receiver
from tests.stack import Stack
from worker.store.models import Delivery, Event, Subscription

pytestmark = pytest.mark.faults

SEND_TIMEOUT_S = 1.0
DISABLE_AFTER = timedelta(days=5)
LAST_STEP = timedelta(hours=10)


class DownReceiver:
    """A verifying Receiver whose port refuses connections (bound, not listening) until ``up()``."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.port = self.receiver.server.server_address[1]
        handler = self.receiver.server.RequestHandlerClass
        self.receiver.server.server_close()
        self._handler = handler
        self._hold = socket.socket()
        self._hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._hold.bind(("127.0.0.1", self.port))  # no listen(): a connect is refused at once

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        self._hold.close()
        ThreadingHTTPServer.allow_reuse_address = True
        self.receiver.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.receiver.server.daemon_threads = True
        self.receiver.thread = threading.Thread(target=self.receiver.server.serve_forever, daemon=True)
        self.receiver.thread.start()
        return self.receiver

    def stop(self) -> None:
        if self.receiver.thread.is_alive():
            self.receiver.stop()
        else:
            self._hold.close()


class Trickler:
    """A Peer whose first ``slow`` answers trickle their headers one byte every 0.5 s."""

    def __init__(self, slow: int) -> None:
        self.slow = slow
        self._n = 0
        self._lock = threading.Lock()
        self.peer = Peer(self._route, interval=0.5)

    def _route(self, request: Any) -> Answer:
        with self._lock:
            self._n += 1
            trickle = "headers" if self._n <= self.slow else None
        return Answer(200, {"ok": True}, trickle=trickle)


def next_due(stack: Stack) -> datetime | None:
    """The earliest retry of an active subscription, or None when nothing is left to send."""
    with stack.sessions.begin() as s:
        # A delivery in flight is due again when its lease runs out.
        return min((max(at, leased or at) for at, leased in s.execute(
            select(Delivery.next_attempt_at, Delivery.leased_until).join(
                Subscription, Subscription.id == Delivery.subscription_id).where(
                Delivery.state == "pending", Subscription.state == "active"))), default=None)


def drain(stack: Stack, on_tick=lambda: None, rounds: int = 3000) -> int:
    """Deliver, then jump the clock to the next retry, until nothing is due; returns the rounds."""
    for n in range(rounds):
        stack.deliver()
        on_tick()
        due = next_due(stack)
        if due is None:
            return n
        stack.clock.now = max(stack.clock.now, due)
    raise AssertionError("deliveries never settled")


def check_received(name: str, arrivals: list[tuple[str, bytes, dict[str, str], int]], secret: str,
                   events: dict[str, Event], expected: set[str]) -> tuple[int, int]:
    """Every expected event arrived with a 2xx, verified, webhook-id = event id, in per-item order.

    ``arrivals``: (webhook-id, body, headers, status or 0 when the answer never got out) in arrival
    order. Returns (events verified, duplicate 2xx receipts).
    """
    ok: Counter[str] = Counter()
    bodies: dict[str, Any] = {}
    seen: dict[int, int] = {}
    for wid, body, headers, status in arrivals:
        Webhook(secret).verify(body, headers)  # raises when the signature is wrong
        data = json.loads(body)
        assert wid == data["id"] and wid in events, f"{name}: webhook-id {wid} vs body {data['id']}"
        payload = {k: v for k, v in data.items() if k != "timestamp"}
        assert bodies.setdefault(wid, payload) == payload, f"{name}: {wid} changed between attempts"
        event = events[wid]
        if event.item_id is not None:
            # Event n+1 of an item is sent only after n succeeded or failed for good: never back.
            assert event.seq >= seen.get(event.item_id, 0), f"{name}: item {event.item_id} went back"
            seen[event.item_id] = event.seq
        if 200 <= status < 300:
            ok[wid] += 1
    missing = expected - set(ok)
    assert not missing, f"{name}: {len(missing)} events never delivered"
    return len(ok), sum(c - 1 for c in ok.values())


def receiver_arrivals(r: Receiver) -> list[tuple[str, bytes, dict[str, str], int]]:
    return [(x.webhook_id, x.body, x.headers, x.status) for x in r.received]


# SQLite only: the hostile part is the network; both databases are covered by the process scenarios.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_hostile_receivers(engine, sim, clock):
    stack = Stack(engine, sim, clock, timeout_s=SEND_TIMEOUT_S)
    down, trickle = DownReceiver(), Trickler(slow=3)
    slow, flaky = Receiver().start(), Receiver().start()
    started = time.monotonic()
    with trickle.peer:
        try:
            subs = {}
            for name, url in (("down", down.url), ("slow", slow.url), ("flaky", flaky.url),
                              ("trickle", trickle.peer.url("/hook"))):
                subs[name] = stack.subs.add(url)
            slow.secrets, flaky.secrets = [subs["slow"][1]], [subs["flaky"][1]]
            down.receiver.secrets = [subs["down"][1]]
            slow.plan(200, delay=SEND_TIMEOUT_S + 1.5, times=3)
            flaky.plan(500, times=3)
            flaky.plan(429, headers={"Retry-After": "120"})
            flaky.plan(503, headers={"Retry-After": "\u00b2"})  # latin-1 "²": a digit to str.isdigit, not to float
            flaky.plan(500, times=2)
            t0 = clock()
            stack.orders(4, stages=4)

            # -- the down subscriber: refused through every retry, until the rule disables it ----------
            down_id = subs["down"][0].id
            watch: dict[str, Any] = {}

            def on_tick() -> None:
                with stack.sessions.begin() as s:
                    sub = s.get(Subscription, down_id)
                    if sub.failing_since is not None:
                        watch.setdefault("failing_since", sub.failing_since)
                    if sub.state == "disabled":
                        watch.setdefault("disabled_at", clock())
                        watch.setdefault("reason", sub.disabled_reason)

            drain(stack, on_tick)
            # The deliveries of the other three all succeeded; the down one was disabled by the rule.
            disabled_after = watch["disabled_at"] - watch["failing_since"]
            assert DISABLE_AFTER <= disabled_after <= DISABLE_AFTER + LAST_STEP * 1.1, disabled_after
            assert watch["reason"].startswith("no successful delivery since")
            with stack.sessions.begin() as s:
                states = Counter((d.subscription_id, d.state) for d in s.scalars(select(Delivery)))
            failed_for_good = states[down_id, "failed"]
            assert failed_for_good >= 4, states  # the whole schedule ran out for those (connection refused)
            for name in ("slow", "flaky", "trickle"):
                sid = subs[name][0].id
                assert states[sid, "pending"] == states[sid, "failed"] == 0, (name, states)

            # -- it comes back: an operator enables it and replays everything since the start --------------
            back = down.up()
            back_at = time.monotonic()
            stack.subs.set_enabled(down_id, True)
            stack.subs.replay(t0, subscription_id=down_id)
            drain(stack)
            recover_s = time.monotonic() - back_at

            # -- the checks --------------------------------------------------------------------------
            with stack.sessions.begin() as s:
                events = {e.id: e for e in s.scalars(select(Event))}
                rows = list(s.scalars(select(Delivery)))
                sub_rows = {x.id: x for x in s.scalars(select(Subscription))}
            item_events = {i for i, e in events.items() if e.item_id is not None}
            assert len(item_events) == 4 * 5
            assert [e.type for e in events.values()].count("subscription.disabled") == 1
            for sub in sub_rows.values():
                assert sub.state == "active" and sub.failing_since is None, (sub.url, sub.state)
            expected: dict[int, set[str]] = defaultdict(set)
            by_pos = {e.position: e.id for e in events.values()}
            for d in rows:
                expected[d.subscription_id].add(by_pos[d.event_position])
                assert d.state in ("succeeded", "failed"), d.state
            for name, _ in subs.items():
                assert item_events <= expected[subs[name][0].id], f"{name}: an event has no delivery"
            sources = {
                "down": receiver_arrivals(back), "slow": receiver_arrivals(slow), "flaky": receiver_arrivals(flaky),
                # The first answers trickled past the deadline: those sends failed.
                "trickle": [(r.headers["webhook-id"], r.body, r.headers, 0 if n < trickle.slow else 200)
                            for n, r in enumerate(trickle.peer.requests)],
            }
            verified = duplicates = 0
            for name, arrivals in sources.items():
                v, d = check_received(name, arrivals, subs[name][1], events, expected[subs[name][0].id])
                verified, duplicates = verified + v, duplicates + d
            assert len(trickle.peer.requests) >= len(expected[subs["trickle"][0].id]) + trickle.slow
            changes = len(item_events)
        finally:
            down.stop()
            slow.stop()
            flaky.stop()
    report(f"hostile_receivers[{engine.dialect.name}]", changes=changes, events=len(events),
           deliveries_verified=verified,
           duplicates=duplicates, recover_s=recover_s)
    print(f"  down: failed for good={failed_for_good} disabled after={disabled_after} "
          f"injected={(clock() - t0).total_seconds() / 3600:.1f}h wall={time.monotonic() - started:.1f}s", flush=True)
