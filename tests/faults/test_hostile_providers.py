"""Issue 10 scenario 5: a provider account that answers with every hostile thing for minutes, then
recovers, while another account's items keep their schedule.

In process (PollerService on an injected clock, real HTTP over loopback, a real database): the
hostile account's base URL is a raw-socket Billit endpoint that answers each poll with the next
hostile answer of its item's cycle (500, 429 with Retry-After, no answer, a body trickled one byte
every 3 s, truncated, cut off, HTML, an endless chunked body, a 2 GB Content-Length, JSON nested
100,000 levels, NaN, invalid UTF-8); when calm it relays the simulator's own answer. The calm
account goes through the same relay, never hostile, which logs when (injected and real time) each
of its polls arrived. The simulator's orders move one stage at a time, and only once the poller
has recorded the previous change, so every change the simulator made must appear as one event.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import socketserver
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from tests.faults.harness import report
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings, normalize
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store.db import make_sessionmaker
from worker.store.models import Event, Item, Snapshot

pytestmark = pytest.mark.faults

#: Total deadline of a provider call (real seconds): short, so trickles and silences cost little.
TIMEOUT_S = 2.0
INTERVAL_S = 10.0
POLICY = PollPolicy(backoff_base_s=2, backoff_max_s=60, jitter_ratio=0.1, failing_after=3)
RETRY_AFTER_S = 45
#: Injected seconds between two changes of one order (each also waits until the last is recorded).
CHANGE_GAP_S = 70.0
WARMUP_S, HOSTILE_S, GIVE_UP_S = 60.0, 300.0, 3600.0

#: Each hostile answer, and what the item's last_error must then say.
EXPECTED_ERROR = {
    "500": "answered 500",
    "429": "answered 429",
    "silent": f"timed out after {TIMEOUT_S:g}s",
    "trickle": f"timed out after {TIMEOUT_S:g}s",
    "truncated": "not JSON",
    "cut": "reading the response failed",
    "html": "not JSON (text/html",
    "chunked": "larger than 1000000 bytes",
    "huge_length": "larger than 1000000 bytes",
    "nested": "nested deeper than",
    "nan": "non-finite number NaN",
    "utf8": "not UTF-8",
}
MODES = tuple(EXPECTED_ERROR)
RETRYABLE = {"500", "429", "silent", "trickle", "cut"}
PORTAL = b"<!DOCTYPE html><html><body><h1>Please sign in</h1><form><input name=user></form></body></html>"
#: Bytes a relay sends at most into an endless body (the client stops at its 1 MB cap long before).
ENDLESS_CAP = 64 << 20


class BillitRelay:
    """``GET /v1/orders/{id}`` on raw sockets: the simulator's answer, or a hostile one when ``hostile``.

    Every answer closes its connection, so no poll inherits a half-read one. ``log`` holds
    ``(ref, mode, injected time, monotonic time)`` per request; ``served`` the good bodies per ref.
    """

    def __init__(self, upstream: str, clock: Any) -> None:
        self.upstream, self.clock = upstream, clock
        self.hostile = False
        self.log: list[tuple[str, str, datetime, float]] = []
        self.served: dict[str, list[Any]] = defaultdict(list)
        self._cycle: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                # OSError: the client gave up (its deadline), which is what the hostile answers are for.
                with contextlib.suppress(OSError):
                    relay._serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> BillitRelay:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _next_mode(self, ref: str) -> str:
        with self._lock:
            # Each item starts at its own place in the cycle, so a few items cover every mode.
            n = self._cycle.setdefault(ref, (int(ref) * 5) % len(MODES))
            self._cycle[ref] = n + 1
            return MODES[n % len(MODES)]

    def _serve(self, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        line = reader.readline().decode("latin-1")
        headers = {}
        while (h := reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        path = line.split(" ")[1]
        ref = path.rstrip("/").rsplit("/", 1)[-1]
        mode = self._next_mode(ref) if self.hostile else "calm"
        with self._lock:
            self.log.append((ref, mode, self.clock(), time.monotonic()))
        upstream = requests.get(self.upstream + path, timeout=10, headers={
            "ApiKey": headers.get("apikey", ""), "PartyID": headers.get("partyid", "")})
        good = upstream.content
        if mode == "calm":
            if upstream.status_code == 200:
                with self._lock:
                    self.served[ref].append(json.loads(good))
            return self._answer(sock, upstream.status_code, good)
        getattr(self, f"_mode_{mode}")(sock, good, upstream.json())

    @staticmethod
    def _head(status: int, *lines: str, ctype: str = "application/json") -> bytes:
        return "".join([f"HTTP/1.1 {status} X\r\n", f"Content-Type: {ctype}\r\n", "Connection: close\r\n",
                        *(f"{x}\r\n" for x in lines), "\r\n"]).encode("latin-1")

    def _answer(self, sock: socket.socket, status: int, body: bytes, *extra: str, ctype: str = "application/json",
                length: int | None = None) -> None:
        sock.sendall(self._head(status, f"Content-Length: {len(body) if length is None else length}", *extra,
                                ctype=ctype) + body)

    def _endless(self, sock: socket.socket, block: bytes) -> None:
        sent = 0
        while sent < ENDLESS_CAP and not self._stop.is_set():
            sock.sendall(block)
            sent += len(block)

    # -- the hostile answers (each gets the simulator's good body to disguise) --------------------

    def _mode_500(self, sock, good, order) -> None:
        self._answer(sock, 500, b"<html><h1>Internal Server Error</h1></html>", ctype="text/html")

    def _mode_429(self, sock, good, order) -> None:
        self._answer(sock, 429, b'{"errors": [{"Code": "TooManyRequests", "Description": "slow down"}]}',
                     f"Retry-After: {RETRY_AFTER_S}")

    def _mode_silent(self, sock, good, order) -> None:
        sock.settimeout(0.2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self._stop.is_set():  # until the client hangs up
            try:
                if sock.recv(1) == b"":
                    return
            except TimeoutError:
                continue

    def _mode_trickle(self, sock, good, order) -> None:
        sock.sendall(self._head(200, f"Content-Length: {len(good)}"))
        for i in range(4):  # one byte every 3 s; the client's deadline ends it during the first wait
            sock.sendall(good[i:i + 1])
            if self._stop.wait(3.0):
                return

    def _mode_truncated(self, sock, good, order) -> None:
        self._answer(sock, 200, good[:len(good) // 2])

    def _mode_cut(self, sock, good, order) -> None:
        self._answer(sock, 200, good[:len(good) // 2], length=len(good))  # then the connection closes

    def _mode_html(self, sock, good, order) -> None:
        self._answer(sock, 200, PORTAL, ctype="text/html")

    def _mode_chunked(self, sock, good, order) -> None:
        sock.sendall(self._head(200, "Transfer-Encoding: chunked"))
        block = b" " * 65536
        self._endless(sock, b"%x\r\n%s\r\n" % (len(block), block))

    def _mode_huge_length(self, sock, good, order) -> None:
        sock.sendall(self._head(200, "Content-Length: 2147483648") + good)
        self._endless(sock, b" " * 65536)

    def _mode_nested(self, sock, good, order) -> None:
        depth = 100_000
        self._answer(sock, 200, b'{"OrderID": %d, "Extra": %s%s}' % (order["OrderID"], b"[" * depth, b"]" * depth))

    def _mode_nan(self, sock, good, order) -> None:
        self._answer(sock, 200, b'{"TotalIncl": NaN, ' + good.lstrip()[1:])

    def _mode_utf8(self, sock, good, order) -> None:
        marked = json.dumps(dict(order, OrderStatus="@@MARK@@")).encode()
        self._answer(sock, 200, marked.replace(b"@@MARK@@", b"To\xff\xfeSend"))


class Orders:
    """The simulator's orders, moved one stage at a time; a change is made only once the poller
    recorded the previous one, so each change the simulator made is observable exactly once."""

    def __init__(self, sim: Any, service: PollerService) -> None:
        self.sim, self.service = sim, service
        self.docs: dict[str, list[Any]] = {}
        self.items: dict[str, int] = {}
        self.changed_at: dict[str, datetime] = {}

    def track(self, ref: str, account: str) -> None:
        self.items[ref] = self.service.track("billit", ref, interval_s=INTERVAL_S, account=account).id
        self.docs[ref] = [normalize(self.sim.billit.order_body(int(ref)), ref=ref)]
        self.changed_at[ref] = self.service.clock()

    def recorded(self, counts: dict[int, int], ref: str) -> bool:
        return counts.get(self.items[ref], 0) == len(self.docs[ref])

    def move(self, ref: str) -> None:
        """The next stage of ``ref``; recorded as a change when its normalized document differs."""
        if self.docs[ref][-1].terminal:
            return
        self.sim.billit.set_stage(int(ref), self.sim.billit.stage_of(int(ref)) + 1)
        doc = normalize(self.sim.billit.order_body(int(ref)), ref=ref)
        last = self.docs[ref][-1]
        if (doc.status, doc.terminal, doc.fields) != (last.status, last.terminal, last.fields):
            self.docs[ref].append(doc)
        self.changed_at[ref] = self.service.clock()


def status_counts(sessions) -> dict[int, int]:
    with sessions.begin() as s:
        rows = s.execute(select(Event.item_id, Event.type)).all()
    return dict(Counter(i for i, t in rows if t in ("status.observed", "status.changed")))


def items_by_id(sessions) -> dict[int, Item]:
    with sessions.begin() as s:
        return {i.id: i for i in s.scalars(select(Item))}


def check_hostile_poll(item: Item, mode: str, failures: int, now: datetime) -> None:
    """One hostile answer: a clear error on the item, one more failure, backoff by the rules."""
    error = item.last_error or ""
    assert EXPECTED_ERROR[mode] in error, f"{mode}: last_error {error!r}"
    assert error.startswith("billit: ") and "\n" not in error and len(error) < 600, error
    assert item.consecutive_failures == failures, (mode, item.consecutive_failures, failures)
    assert item.state == "active" and item.next_poll_at is not None
    delay = (item.next_poll_at - now).total_seconds()
    if mode in RETRYABLE:
        ceiling = min(POLICY.backoff_max_s, POLICY.backoff_base_s * 2 ** (failures - 1))
        low, high = ceiling / 2, ceiling
        if mode == "429":
            low, high = max(low, RETRY_AFTER_S), max(high, RETRY_AFTER_S)
    else:  # no quick retry fixes a bad body: the full cap
        low, high = POLICY.backoff_max_s / 2, POLICY.backoff_max_s
    assert low - 1e-6 <= delay <= high + 1e-6, f"{mode}: failure {failures} backs off {delay:.1f}s, not {low}-{high}"


# SQLite only: the hostile part is the network; both databases are covered by the process scenarios.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_hostile_provider_for_minutes_then_recovering(engine, sim, clock):
    sessions = make_sessionmaker(engine)
    started = time.monotonic()
    with BillitRelay(sim.url, clock) as calm, BillitRelay(sim.url, clock) as hostile:
        settings = BillitSettings(base_url=calm.url, api_key="sim-billit-key", party_id="1234",
                                  accounts={"hostile": {"base_url": hostile.url}})
        service = PollerService(sessions, ProviderSet({"billit": settings}, ProviderContext(
            http=HttpOptions(timeout_s=TIMEOUT_S), clock=clock)), POLICY, clock=clock, rng=random.Random(5),
            threads=8)
        orders = Orders(sim, service)
        calm_refs = [str(sim.billit.create_order()) for _ in range(4)]
        hostile_refs = [str(sim.billit.create_order()) for _ in range(4)]
        for ref in calm_refs:
            orders.track(ref, "default")
        for ref in hostile_refs:
            orders.track(ref, "hostile")
        hostile_ids = {orders.items[r]: r for r in hostile_refs}
        t0 = clock()
        hostile_from, hostile_until = t0 + timedelta(seconds=WARMUP_S), None
        failures: dict[int, int] = defaultdict(int)
        first_success_after: dict[int, datetime] = {}
        for _ in range(5000):  # bounded: the run ends when every order is final
            items = items_by_id(sessions)
            due = [i.next_poll_at for i in items.values() if i.state == "active" and i.next_poll_at]
            if not due:
                break
            clock.now = max(clock.now, min(due))
            assert clock.now - t0 < timedelta(seconds=GIVE_UP_S), "the run did not finish"
            # Phases: calm, hostile for several minutes (and until every answer was given twice), calm.
            if not hostile.hostile and hostile_until is None and clock.now >= hostile_from:
                counts = status_counts(sessions)
                for ref in hostile_refs:  # a change waits in the simulator through the whole storm
                    if orders.recorded(counts, ref):
                        orders.move(ref)
                hostile.hostile = True
            served = Counter(m for _, m, _, _ in hostile.log)
            if hostile.hostile and clock.now >= hostile_from + timedelta(seconds=HOSTILE_S) and all(
                    served[m] >= 2 for m in MODES):
                hostile.hostile, hostile_until = False, clock.now
            counts = status_counts(sessions)
            for ref in orders.items:
                if orders.recorded(counts, ref) and clock.now - orders.changed_at[ref] >= timedelta(
                        seconds=CHANGE_GAP_S):
                    orders.move(ref)
            seen, tick = len(hostile.log), time.monotonic()
            calm_seen = len(calm.log)
            service.dispatch_due(service.poll_claims, lease_s=30, limit=100, chunk_size=100)
            now, items = clock(), items_by_id(sessions)
            for ref, mode, _, _ in hostile.log[seen:]:
                item = items[orders.items[ref]]
                if mode == "calm":
                    assert item.consecutive_failures == 0, (ref, item.consecutive_failures)
                    failures[item.id] = 0
                    if hostile_until is not None:
                        first_success_after.setdefault(item.id, now)
                    continue
                failures[item.id] += 1
                check_hostile_poll(item, mode, failures[item.id], now)
            for _, _, _, arrived in calm.log[calm_seen:]:
                # Hostile polls hold their threads for up to the deadline; the others never wait on them.
                assert arrived - tick < TIMEOUT_S / 2, f"a calm poll started {arrived - tick:.2f}s into the tick"
        wall = time.monotonic() - started

        # -- the checks --------------------------------------------------------------------
        assert hostile_until is not None and hostile_until - hostile_from >= timedelta(seconds=HOSTILE_S)
        served = Counter(m for _, m, _, _ in hostile.log)
        assert all(served[m] >= 2 for m in MODES), served
        with sessions.begin() as s:
            events = list(s.scalars(select(Event).order_by(Event.position)))
            snapshots = list(s.scalars(select(Snapshot)))
        by_item: dict[int, list[Event]] = defaultdict(list)
        for e in events:
            by_item[e.item_id].append(e)
        for ref, item_id in orders.items.items():
            mine = by_item[item_id]
            assert [e.seq for e in mine] == list(range(1, len(mine) + 1)), f"{ref}: seqs out of order"
            status = [e for e in mine if e.type in ("status.observed", "status.changed")]
            want = [("status.observed" if n == 0 else "status.changed", d.status, d.fields)
                    for n, d in enumerate(orders.docs[ref])]
            assert [(e.type, e.data["status"], e.data["snapshot"]) for e in status] == want, ref
            types = [e.type for e in mine]
            if item_id in hostile_ids:
                assert types.count("poll.failing") == 1 and types.count("poll.recovered") == 1, types
                fail, rec = types.index("poll.failing"), types.index("poll.recovered")
                assert fail < rec and not set(types[fail + 1:rec]) - {"poll.failing"}, types
                assert mine[rec].created_at >= hostile_until
            else:
                assert set(types) <= {"status.observed", "status.changed"}, types
        # Nothing half-parsed: each snapshot is a body the simulator really served, whole.
        good = {ref: [json.dumps(b, sort_keys=True) for b in calm.served[ref] + hostile.served[ref]]
                for ref in orders.items}
        refs = {v: k for k, v in orders.items.items()}
        for snap in snapshots:
            assert json.dumps(snap.raw, sort_keys=True) in good[refs[snap.item_id]], f"snapshot {snap.id} not served"
        # The calm account kept its schedule: each poll within its interval (+ jitter) of the last.
        calm_times: dict[str, list[datetime]] = defaultdict(list)
        for ref, _, at, _ in calm.log:
            if ref in calm_refs:
                calm_times[ref].append(at)
        for ref, times in calm_times.items():
            gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
            assert gaps and max(gaps) <= INTERVAL_S * (1 + POLICY.jitter_ratio) + 1e-6, (ref, max(gaps))
        during = [at for ref, _, at, _ in calm.log if ref in calm_refs and hostile_from <= at < hostile_until]
        assert len(during) >= 4 * HOSTILE_S / (INTERVAL_S * 1.1) * 0.5, "calm items were not polled meanwhile"
        items = items_by_id(sessions)
        assert all(i.state == "terminal" for i in items.values()), "an item is stuck"
        assert set(first_success_after) == set(hostile_ids)
        recover_s = max((t - hostile_until).total_seconds() for t in first_success_after.values())
        assert recover_s <= POLICY.backoff_max_s + 1e-6
        hostile_polls = sum(n for m, n in served.items() if m != "calm")
        assert hostile_polls <= 4 * (HOSTILE_S * 3 / POLICY.backoff_base_s), "the hostile account was hammered"
    report(f"hostile_providers[{engine.dialect.name}]", changes=sum(len(d) for d in orders.docs.values()),
           events=len(events),
           deliveries_verified=0, duplicates=0, recover_s=recover_s)
    print(f"  hostile polls={hostile_polls} by answer={dict(sorted(served.items()))} calm polls={len(calm.log)} "
          f"injected={(clock() - t0).total_seconds():.0f}s wall={wall:.1f}s", flush=True)
