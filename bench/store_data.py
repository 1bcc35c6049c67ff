"""The rows bench/store.py loads: items, labels, snapshots, events, deliveries and attempts.

``Layout`` says how many of each there are and where each row comes from: every value is a function
of its index (the random part of the event ids comes from a seeded generator), so the same arguments
load the same rows, dated from the run's "now".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from store_documents import ACCOUNTS, ALERTS, BILLIT_FLOW, SLOTS, Documents, status_of

from worker.ids import event_id

DAY_US = 86_400_000_000
#: Cumulative seconds from an event to each delivery attempt (Svix's schedule, as the poller's).
ATTEMPT_AT_S = (0.2, 5.2, 305.2, 2105.2, 9305.2, 27305.2, 63305.2, 99305.2)


def mix(i: int, salt: int) -> float:
    """A uniform number in [0, 1) that depends only on ``i`` and ``salt`` (a 32-bit integer hash)."""
    x = (i * 0x9E3779B1 + salt * 0x7F4A7C15 + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    x = (x * 0x297A2D39) & 0xFFFFFFFF
    x ^= x >> 15
    return x / 4294967296.0


def interval_of(i: int) -> float:
    """Item ``i``'s poll interval: mostly the default 5 minutes, some 15 minutes and an hour."""
    u = mix(i, 3)
    return 300.0 if u < 0.7 else 900.0 if u < 0.9 else 3600.0


def state_of(i: int) -> str:
    """1.5 % terminal, 0.5 % gone, 0.3 % paused, the rest active."""
    u = mix(i, 2)
    return "terminal" if u < 0.015 else "gone" if u < 0.02 else "paused" if u < 0.023 else "active"


def labels_json(i: int) -> str:
    """A third of the items carry two labels."""
    return f'{{"customer":"c{i % 5000:04d}","env":"prod"}}' if i % 3 == 0 else "{}"


def external_id(i: int) -> str | None:
    """Half of the items carry the client's record id."""
    return f"crm-{i + 1}" if i % 2 == 0 else None


def count_mod(lo: int, hi: int, m: int, r: int) -> int:
    """How many k in [lo, hi) have k % m == r."""
    return 0 if hi <= lo else (hi - 1 - r) // m - (lo - 1 - r) // m


class Stamp:
    """Microseconds since the epoch as the text both databases read as that UTC instant.

    SQLAlchemy's SQLite format (``YYYY-MM-DD HH:MM:SS.ffffff``, which SQLite compares as text);
    PostgreSQL reads the same in a session whose time zone is UTC. The minute's prefix is cached.
    """

    def __init__(self) -> None:
        self._minute = -1
        self._prefix = ""

    def __call__(self, us: int) -> str:
        minute, rest = divmod(us, 60_000_000)
        if minute != self._minute:
            self._minute = minute
            self._prefix = datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%d %H:%M:")
        return f"{self._prefix}{rest // 1_000_000:02d}.{rest % 1_000_000:06d}"


@dataclass
class Layout:
    """What is loaded, and where each row comes from: every value is a function of its index."""

    items: int
    events: int
    attempts: int
    days: int
    pending: int  # the newest events' deliveries are still pending: these many
    due: int  # of which the newest are due (new), the rest waiting for a retry
    t0_us: int  # the data's "now": the newest event is just before it
    stride: int = 0  # event k belongs to item (k * stride) % items
    history_items: int = 5  # items with a long snapshot history
    history_snapshots: int = 150
    # Derived in __post_init__.
    inverse: int = field(init=False)
    accounts: bytes = field(init=False)
    span_us: int = field(init=False)
    start_us: int = field(init=False)
    settled: int = field(init=False)  # events whose deliveries are done
    alerts_settled: int = field(init=False)
    pending_attempts: int = field(init=False)
    main_attempts: int = field(init=False)  # attempts of the settled deliveries to the catch-all subscription

    def __post_init__(self) -> None:
        n = max(self.items, 1)
        stride = max(1, int(n * 0.6180339887)) | 1
        while math.gcd(stride, n) != 1:
            stride += 1
        self.stride = stride
        self.inverse = pow(stride, -1, n) if n > 1 else 0
        self.accounts = bytes(SLOTS[int(mix(i, 1) * len(SLOTS))] for i in range(self.items))
        self.span_us = self.days * DAY_US
        self.start_us = self.t0_us - self.span_us
        self.settled = self.events - self.pending
        self.alerts_settled = sum(count_mod(max(self.items, 0), self.settled, 97, r) for r in (0, 1))
        self.pending_attempts = sum(1 + kk % 2 for kk in range(self.pending - self.due))
        self.main_attempts = max(0, self.attempts - self.alerts_settled - self.pending_attempts)

    def event_seq(self, i: int) -> int:
        """How many events item ``i`` has."""
        n = self.items
        full, extra = divmod(self.events, n)
        return full + (1 if (i * self.inverse) % n < extra else 0)

    def event_type(self, k: int) -> str:
        """The type of event ``k``: the first of each item observed, then mostly changes, a few alerts."""
        if k < self.items:
            return "status.observed"
        return "poll.failing" if k % 97 == 0 else "poll.recovered" if k % 97 == 1 else "status.changed"

    def event_us(self, k: int) -> int:
        """When event ``k`` was written: evenly over the days, the newest just before t0."""
        return self.start_us + (2 * k + 1) * self.span_us // (2 * self.events)

    def _base(self, k: int) -> int:
        e = max(self.settled, 1)
        return (k + 1) * self.main_attempts // e - k * self.main_attempts // e

    def attempts_of(self, k: int) -> int:
        """Attempts of settled event ``k``'s delivery: the even share, except that in each block of
        twenty one delivery took three (two failures first) and two others one less."""
        n = self._base(k)
        r = k % 20
        b0 = k - r
        if b0 + 20 <= self.settled and self._base(b0 + 18) >= 1 and self._base(b0 + 19) >= 1:
            n += 2 if r == 3 else -1 if r in (18, 19) else 0
        return n


def item_rows(lay: Layout, lo: int, hi: int,
              stamp: Stamp) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Items ``lo`` to ``hi`` and their schedules: scheduled over their next interval, so about a
    tick's worth is due."""
    rows, schedules = [], []
    t0 = lay.t0_us
    for i in range(lo, hi):
        acct = lay.accounts[i]
        provider, account, kind, _ = ACCOUNTS[acct]
        interval, state = interval_of(i), state_of(i)
        seq = lay.event_seq(i)
        step = (i + seq) % len(BILLIT_FLOW)
        due = t0 + int(mix(i, 5) * interval * 1e6)  # the first round (t0 + a tick) claims 1.5 ticks' worth
        polled = due - int(interval * 1e6)
        failures, failing, error, error_at, claims, due_since = 0, 0, None, None, 0, None
        success = polled
        u = mix(i, 4)
        if state == "active" and u < 0.003:  # failing (past POLLER_FAILING_AFTER) or retrying
            failures, failing = (6, 1) if u < 0.001 else (2, 0)
            error, error_at = f"{provider} answered 503 Service Unavailable (retryable)", stamp(polled)
            success = polled - 3_600_000_000
        elif state == "active" and u < 0.0032:  # claimed three leases in a row without a poll
            claims, due_since = 3, stamp(due - 360_000_000)
        if state == "active":
            next_poll, updated = stamp(due), polled
        else:
            next_poll, updated = None, lay.start_us + int(mix(i, 6) * lay.span_us)
        last_status = status_of(acct, step, terminal=state == "terminal")
        ext = external_id(i)
        rows.append((
            i + 1, provider, account, kind, str(1_000_000 + i), interval, state,
            stamp(polled), stamp(success), last_status, failures, failing, error, error_at, seq,
            f'W/"{i:x}-{seq}"' if acct < 2 else None, labels_json(i), ext,
            stamp(lay.start_us - int(mix(i, 8) * 60 * DAY_US)), stamp(updated)))
        schedules.append((i + 1, provider, next_poll, int(mix(i, 7) * 5000), claims, due_since))
    return rows, schedules


ITEM_COLUMNS = ("id", "provider", "account", "kind", "ref", "interval_s", "state",
                "last_polled_at", "last_success_at", "last_status", "consecutive_failures", "failing", "last_error",
                "last_error_at", "event_seq", "version", "labels", "external_id", "created_at", "updated_at")
SCHEDULE_COLUMNS = ("item_id", "provider", "next_poll_at", "lease_id", "claims_since_poll", "due_since")
LABEL_COLUMNS = ("item_id", "key", "value")
SNAPSHOT_COLUMNS = ("id", "item_id", "taken_at", "status", "terminal", "fields", "raw")
EVENT_COLUMNS = ("position", "id", "item_id", "seq", "type", "data", "created_at")
DELIVERY_COLUMNS = ("id", "subscription_id", "event_position", "item_id", "state", "attempts", "next_attempt_at",
                    "lease_id", "last_status_code", "last_error", "created_at", "updated_at", "finished_at")
ATTEMPT_COLUMNS = ("id", "delivery_id", "attempted_at", "status_code", "latency_ms", "outcome", "fault",
                   "response_excerpt", "error")


def snapshot_rows(lay: Layout, docs: Documents, lo: int, hi: int, first_id: int,
                  stamp: Stamp) -> list[tuple[Any, ...]]:
    """The latest snapshot of items ``lo`` to ``hi``, ids from ``first_id``."""
    rows = []
    for n, i in enumerate(range(lo, hi)):
        acct = lay.accounts[i]
        step = (i + lay.event_seq(i)) % len(BILLIT_FLOW)
        terminal = state_of(i) == "terminal"
        rows.append((first_id + n, i + 1, stamp(lay.start_us + int(mix(i, 9) * lay.span_us)),
                     status_of(acct, step, terminal), int(terminal), docs.fields[(acct, step, terminal)],
                     docs.raw[(acct, step, terminal)].replace("@REF@", str(1_000_000 + i))))
    return rows


@dataclass
class HistoryChunk:
    """Rows of events, deliveries and attempts for a range of events."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)


class History:
    """Events with their deliveries and attempts, in stream order."""

    def __init__(self, lay: Layout, docs: Documents, seed: int = 13) -> None:
        self.lay, self.docs = lay, docs
        self.rng = random.Random(seed)
        self.delivery_id = 0
        self.attempt_id = 0
        self.stamp = Stamp()

    def chunk(self, lo: int, hi: int) -> HistoryChunk:
        lay, stamp, out = self.lay, self.stamp, HistoryChunk()
        n, stride = lay.items, lay.stride
        for k in range(lo, hi):
            j = (k * stride) % n
            seq = k // n + 1
            acct = lay.accounts[j]
            etype = lay.event_type(k)
            at = lay.event_us(k)
            made = stamp(at)
            ext = external_id(j)
            data = self.docs.events[(acct, etype, (j + seq) % len(BILLIT_FLOW))] % (
                j + 1, str(1_000_000 + j), labels_json(j), "null" if ext is None else f'"{ext}"')
            eid = event_id(datetime.fromtimestamp(at / 1e6, UTC), self.rng.randbytes(10))
            out.events.append((k + 1, eid, j + 1, seq, etype, data, made))
            subs = (1, 2) if etype in ALERTS else (1,)
            for sub in subs:
                self.delivery_id += 1
                if k < lay.settled:
                    tries = lay.attempts_of(k) if sub == 1 else 1
                    self._settled(out, k, j, sub, at, made, tries)
                else:
                    self._pending(out, k, j, sub, at, made)
        return out

    def _attempt(self, out: HistoryChunk, at: int, ok: bool) -> None:
        self.attempt_id += 1
        latency = round(20 + 280 * mix(self.attempt_id, 10), 3)
        out.attempts.append((self.attempt_id, self.delivery_id, self.stamp(at), 200 if ok else 503, latency,
                             "success" if ok else "retry", None if ok else "unavailable", "OK" if ok else
                             "Service Unavailable", None if ok else "HTTP 503"))

    def _settled(self, out: HistoryChunk, k: int, j: int, sub: int, at: int, made: str, tries: int) -> None:
        last = at + int(ATTEMPT_AT_S[0] * 1e6)
        for t in range(tries):
            beyond = max(0, t - len(ATTEMPT_AT_S) + 1)  # past the schedule (more attempts than events): 10 h apart
            last = at + int((ATTEMPT_AT_S[min(t, len(ATTEMPT_AT_S) - 1)] + 36_000 * beyond) * 1e6)
            self._attempt(out, last, t == tries - 1)
        done = self.stamp(last + 150_000)
        out.deliveries.append((self.delivery_id, sub, k + 1, j + 1, "succeeded", tries, None, tries, 200, None,
                               made, done, done))

    def _pending(self, out: HistoryChunk, k: int, j: int, sub: int, at: int, made: str) -> None:
        kk = k - self.lay.settled
        if sub == 1 and kk < self.lay.pending - self.lay.due:  # retrying: failed once or twice, next try in hours
            tries = 1 + kk % 2
            for t in range(tries):
                self._attempt(out, at + int(ATTEMPT_AT_S[t] * 1e6), False)
            retry = self.lay.t0_us + 7_200_000_000 + int(mix(k, 11) * 7_200_000_000)
            out.deliveries.append((self.delivery_id, sub, k + 1, j + 1, "pending", tries, self.stamp(retry), tries,
                                   503, "HTTP 503", made, self.stamp(at + int(ATTEMPT_AT_S[tries - 1] * 1e6)), None))
        else:  # new: due since it was written
            out.deliveries.append((self.delivery_id, sub, k + 1, j + 1, "pending", 0, made, 0, None, None, made, made,
                                   None))
