"""Benchmark the store at scale (issue 13): the hot paths with a million items and ten million events.

Populates a migrated database (the project's migrations, so the indexes are the real ones) with
``--items`` tracked items, ``--events`` events spread evenly over the last ``--days`` days, one
delivery per event to a catch-all webhook subscription (plus one per alert event to a second,
filtered one) and ``--attempts`` delivery attempts; then times, with the project's own code, the
paths that run all day: the dispatch claim, a poll's writes, the delivery claim, `poller status`,
the dashboard, the metrics scrape and the events API's first and a deep page. Then it prunes the
oldest day (a day's worth: events/D) in a background thread, as beat's daily prune does, and times
the same paths again meanwhile.

    .venv/bin/python bench/store.py --db sqlite                                 # 1M items, 10M events, 10M attempts
    .venv/bin/python bench/store.py --db postgresql                             # a scratch database beside
                                                                               # TEST_DATABASE_URL (or --pg-url)
    .venv/bin/python bench/store.py --db sqlite --path /var/tmp/store.db --keep # populate once and keep it
    .venv/bin/python bench/store.py --reuse /var/tmp/store.db                   # time again, without populating
    .venv/bin/python bench/store.py --items 2000 --events 20000 --attempts 20000 --db sqlite   # a quick check

How it runs. A simulated clock starts at the populated data's "now" and moves one dispatch tick
(POLLER_TICK_SECONDS, 5 s) per round. A round is what a tick brings: claim a dispatch chunk (200, the
most overdue, as the chunk would be claimed on its own), claim the rest of the tick (limit
POLLER_DISPATCH_LIMIT, 20,000, as `dispatch_due` claims: at 1M items about 13,000 come due per tick),
poll the 200 claimed as unchanged (`load_work`, decisions as worker/polling.py makes them,
`apply_outcomes` and commit), claim the due deliveries (limit POLLER_DELIVERY_LIMIT; given back
untimed, so every round claims the same: the newest --due-deliveries of the pending tail, whose
older part waits for retries in hours), the same claim with the whole tail due (as after a
subscriber's outage; rolled back), read `poller status`, the dashboard data, a metrics scrape and
four event pages (limits 100 and 1000, from the start and from the middle of the stream). The items
the tick claimed are then marked polled in one untimed statement, so they come back an interval
later and the number due stays what it would be in steady state. Every other write commits.

What is not like production: nothing else runs (no workers, no API server), so the figures are
the store's own; the prune is a thread of this process (as in a `threads` worker pool), sharing its
GIL with the timed paths. SQLite is not ANALYZEd (the poller never does); PostgreSQL gets the
VACUUM ANALYZE that autovacuum would give a table loaded this fast. Each run prunes the oldest
day, so a database reused with --reuse has one day less of history per run before it.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import Engine, Text, bindparam, func, make_url, select, text, update  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from config.settings import Settings  # noqa: E402
from worker.diff import diff_fields  # noqa: E402
from worker.documents import dumps_strict  # noqa: E402
from worker.domain import ItemRef  # noqa: E402
from worker.feed import EventFeed  # noqa: E402
from worker.ids import event_id, event_ids  # noqa: E402
from worker.metrics_state import StateCollector  # noqa: E402
from worker.policy import PollPolicy, after_success, event_data  # noqa: E402
from worker.providers.billit import ORDER_STATUS  # noqa: E402
from worker.retention import Cutoffs, Retention  # noqa: E402
from worker.status import read_status, record_heartbeat  # noqa: E402
from worker.store import crypto, repo  # noqa: E402
from worker.store import deliveries as drepo  # noqa: E402
from worker.store.db import create_database, drop_database, make_engine, make_sessionmaker, sqlite_url  # noqa: E402
from worker.store.migrate import upgrade  # noqa: E402
from worker.store.models import Delivery, Event, Heartbeat, Item  # noqa: E402
from worker.store.prune import Pruner  # noqa: E402
from worker.store.sizes import store_size  # noqa: E402
from worker.webhooks.payload import new_secret  # noqa: E402

_SETTINGS = Settings.model_fields
#: The shipped defaults the paths run with.
TICK_S = float(_SETTINGS["tick_seconds"].default)
LEASE_S = float(_SETTINGS["lease_seconds"].default)
DISPATCH_LIMIT = int(_SETTINGS["dispatch_limit"].default)
DISPATCH_CHUNK = int(_SETTINGS["dispatch_chunk"].default)
DELIVERY_LEASE_S = float(_SETTINGS["delivery_lease_seconds"].default)
DELIVERY_LIMIT = int(_SETTINGS["delivery_limit"].default)
#: The targets of issue 13 (every path, and during a prune), and of issue 3 (the dispatch tick).
TARGET_MS, PRUNE_TARGET_MS, DISPATCH_MS_PER_10K = 50.0, 100.0, 1000.0
#: A fixed Fernet key for the subscriptions' secrets: the database is a scratch one, and a kept one
#: must open again in a later run.
BENCH_KEY = base64.urlsafe_b64encode(b"status-poller bench/store.py key").decode()
DAY_US = 86_400_000_000
#: Provider accounts: (provider, account, kind, share of the items in twentieths).
ACCOUNTS = (("billit", "default", "order", 8), ("billit", "acme", "order", 3),
            ("amili_distribution", "default", "invoice_number", 4), ("amili_collection", "default", "invoice", 3),
            ("amili_ada", "default", "case", 2))
SLOTS = bytes(n for n, account in enumerate(ACCOUNTS) for _ in range(account[3]))
BILLIT_FLOW = ("ToSend", "Sent", "ToPay", "Delivered")
AMILI_FLOW = ("open", "reminded", "in_collection", "payment_plan")
#: Event types the second subscription asks for (the alerts).
ALERTS = ("poll.failing", "poll.recovered")
#: Cumulative seconds from an event to each delivery attempt (Svix's schedule, as the poller's).
ATTEMPT_AT_S = (0.2, 5.2, 305.2, 2105.2, 9305.2, 27305.2, 63305.2, 99305.2)
#: The tables the bulk load fills.
BULK_TABLES = ("items", "item_labels", "snapshots", "events", "deliveries", "delivery_attempts")
#: The large ones, whose secondary indexes and constraints are dropped and made again (from the
#: definitions the migrations left) after their load. Only plain column indexes: the items' partial
#: indexes stay as migrated (PostgreSQL would write their predicates back in another form).
REBUILT = ("snapshots", "events", "deliveries", "delivery_attempts")
HISTORY_CHUNK = 20_000


def dashboard() -> Callable[..., dict[str, Any]]:
    """``api.dashboard.page_data``, imported by name: mypy, checking this file, takes bench/ for the
    base of its imports and so bench/api.py for the ``api`` package."""
    return cast(Callable[..., dict[str, Any]], importlib.import_module("api.dashboard").page_data)

# -- the data -----------------------------------------------------------------------------


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


def fields_of(acct: int, step: int, terminal: bool = False) -> dict[str, Any]:
    """The normalized fields of a document at ``step`` of its account's flow."""
    if ACCOUNTS[acct][0] == "billit":
        status = "Paid" if terminal else BILLIT_FLOW[step]
        delivery = {
            "is_delivered": step >= 2 or terminal, "status": "Delivered" if step >= 2 else "Sent",
            "date": "2026-01-04T10:22:00", "info": "Peppol", "refused_date": None,
            "refused_reason": None, "refused_info": None}
        messages = [{"description": "Invoice delivered", "file_id": "f-7002",
                     "creation_date": "2026-01-05T08:02:00", "transport_type": "Peppol",
                     "success": True, "trials": 1, "destination": "0208:0123456789", "direction": "Outgoing"}
                    ] if terminal else []
        return {"order_status": status, "delivery": delivery, "messages": messages}
    status = "paid" if terminal else AMILI_FLOW[step]
    return {"status": status, "amount": "1250.00", "open_amount": "0.00" if terminal else "1250.00",
            "currency": "EUR", "due_date": "2026-02-01", "reminder_level": step, "last_action": f"{status}_at"}


def status_of(acct: int, step: int, terminal: bool = False) -> str:
    """The snake_case status the adapters report."""
    if ACCOUNTS[acct][0] == "billit":
        return ORDER_STATUS["Paid" if terminal else BILLIT_FLOW[step]]
    return "paid" if terminal else AMILI_FLOW[step]


def raw_of(acct: int, step: int, terminal: bool = False) -> str:
    """A provider body as the snapshot keeps it, with ``@REF@`` where the ref goes."""
    fields = fields_of(acct, step, terminal)
    if ACCOUNTS[acct][0] == "billit":
        body: dict[str, Any] = {
            "OrderID": "@REF@", "OrderNumber": "INV-2026-@REF@", "OrderType": "Invoice",
            "OrderDirection": "Income", "OrderStatus": fields["order_status"], "TotalIncl": 1512.5,
            "TotalExcl": 1250.0, "Currency": "EUR", "OrderDate": "2026-01-02", "ExpiryDate": "2026-02-01",
            "Customer": {"Name": "Example Customer BV", "VATNumber": "BE0123456789", "PartyID": 4242},
            "CurrentDocumentDeliveryDetails": None, "Messages": []}
    else:
        body = {"_id": "@REF@", "status": fields["status"], "debt": {"invoice_number": "@REF@", "amount": 1250.0,
                                                                    "currency": "EUR", "due_date": "2026-02-01"},
                "debtor": {"name": "Example Debtor", "country": "BE"}, "history": [fields["last_action"]]}
    return dumps_strict(body)


def event_template(acct: int, etype: str, step: int) -> str:
    """The ``data`` of an event as the poller writes it (worker.policy.event_data), with ``%d``,
    ``%s``, ``%s``, ``%s`` where the item id, ref, labels and external id go."""
    provider, account, kind, _ = ACCOUNTS[acct]
    item = ItemRef(-7777777, provider, account, kind, "@REF@", labels={"@": "@"}, external_id="@EXT@")
    fields, before = fields_of(acct, step), fields_of(acct, (step - 1) % len(BILLIT_FLOW))
    status, previous = status_of(acct, step), status_of(acct, (step - 1) % len(BILLIT_FLOW))
    if etype == "status.observed":
        data = event_data(item, status=status, snapshot=fields)
    elif etype == "status.changed":
        data = event_data(item, status=status, previous_status=previous, changes=diff_fields(before, fields),
                          snapshot=fields)
    elif etype == "poll.failing":
        data = event_data(item, status=status, snapshot=fields, consecutive_failures=5,
                          error=f"{provider} answered 503 Service Unavailable (retryable)")
    else:
        data = event_data(item, status=status, snapshot=fields, consecutive_failures=5)
    out = dumps_strict(data).replace("%", "%%").replace("-7777777", "%d", 1).replace('"@REF@"', '"%s"', 1)
    return out.replace('{"@":"@"}', "%s", 1).replace('"@EXT@"', "%s", 1)


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


def item_rows(lay: Layout, lo: int, hi: int, stamp: Stamp) -> list[tuple[Any, ...]]:
    """Items ``lo`` to ``hi``: scheduled over their next interval, so about a tick's worth is due."""
    rows = []
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
            i + 1, provider, account, kind, str(1_000_000 + i), interval, state, next_poll, int(mix(i, 7) * 5000),
            stamp(polled), stamp(success), last_status, failures, failing, error, error_at, seq,
            f'W/"{i:x}-{seq}"' if acct < 2 else None, claims, due_since, labels_json(i), ext,
            stamp(lay.start_us - int(mix(i, 8) * 60 * DAY_US)), stamp(updated)))
    return rows


ITEM_COLUMNS = ("id", "provider", "account", "kind", "ref", "interval_s", "state", "next_poll_at", "lease_id",
                "last_polled_at", "last_success_at", "last_status", "consecutive_failures", "failing", "last_error",
                "last_error_at", "event_seq", "version", "claims_since_poll", "due_since", "labels", "external_id",
                "created_at", "updated_at")
LABEL_COLUMNS = ("item_id", "key", "value")
SNAPSHOT_COLUMNS = ("id", "item_id", "taken_at", "status", "terminal", "fields", "raw")
EVENT_COLUMNS = ("position", "id", "item_id", "seq", "type", "data", "created_at")
DELIVERY_COLUMNS = ("id", "subscription_id", "event_position", "item_id", "state", "attempts", "next_attempt_at",
                    "lease_id", "last_status_code", "last_error", "created_at", "updated_at", "finished_at")
ATTEMPT_COLUMNS = ("id", "delivery_id", "attempted_at", "status_code", "latency_ms", "outcome", "fault",
                   "response_excerpt", "error")


class Documents:
    """The JSON texts, made once per account, step and type."""

    def __init__(self) -> None:
        steps = range(len(BILLIT_FLOW))
        accts = range(len(ACCOUNTS))
        self.fields = {(a, s, t): dumps_strict(fields_of(a, s, t)) for a in accts for s in steps for t in (False, True)}
        self.raw = {(a, s, t): raw_of(a, s, t) for a in accts for s in steps for t in (False, True)}
        self.events = {(a, e, s): event_template(a, e, s) for a in accts for s in steps
                       for e in ("status.observed", "status.changed", *ALERTS)}


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


# -- loading ------------------------------------------------------------------------------


class SqliteLoader:
    """Bulk inserts on the raw sqlite3 connection: no journal and no fsync while loading."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-1048576")  # 1 GiB while loading (the index builds sort)
        self.db.execute("BEGIN")
        self.indexes: list[str] = []

    def drop_indexes(self, tables: Sequence[str]) -> None:
        rows = self.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                               f"AND tbl_name IN ({', '.join('?' * len(tables))})", tables).fetchall()
        for name, sql in rows:
            self.indexes.append(sql)
            self.db.execute(f'DROP INDEX "{name}"')

    def load(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                            rows)

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def finish(self) -> None:
        for sql in self.indexes:  # the migrations' own CREATE INDEX statements, as they were
            self.db.execute(sql)
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.close()


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgLoader:
    """COPY FROM STDIN, with the constraints and secondary indexes made after the load."""

    def __init__(self, url: str) -> None:
        self.db = psycopg.connect(libpq_url(url))
        self.db.execute("SET TIME ZONE 'UTC'")
        self.db.execute("SET synchronous_commit = off")
        self.db.execute("SET maintenance_work_mem = '512MB'")
        self.constraints: list[tuple[str, str, str]] = []
        self.indexes: list[str] = []

    def drop_indexes(self, tables: Sequence[str]) -> None:
        names = list(tables)
        # Unique and foreign-key constraints (the primary keys stay), foreign keys first.
        self.constraints = [(t, n, d) for t, n, d in self.db.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid::regclass::text = ANY(%s) AND contype IN ('u', 'f') ORDER BY contype = 'u', conname",
            (names,)).fetchall()]
        self.indexes = [d for (d,) in self.db.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY indexname", (names,)).fetchall()]
        for table, name, _ in self.constraints:
            self.db.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for (name,) in self.db.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s) "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)", (names,)).fetchall():
            self.db.execute(f'DROP INDEX "{name}"')

    def load(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with self.db.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def commit(self) -> None:
        self.db.commit()

    def finish(self) -> None:
        for sql in self.indexes:
            self.db.execute(sql)
        for table, name, definition in reversed(self.constraints):  # unique ones first, then foreign keys
            self.db.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for table, column in (("items", "id"), ("snapshots", "id"), ("events", "position"), ("deliveries", "id"),
                              ("delivery_attempts", "id")):
            self.db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                            f"(SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)")
        self.db.commit()
        self.db.autocommit = True
        for table in BULK_TABLES:  # what autovacuum would do after a load: visibility map, statistics
            self.db.execute(f"VACUUM (ANALYZE) {table}")
        self.db.close()


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def populate(url: str, lay: Layout) -> None:
    """Migrate, add the subscriptions and the last tick's heartbeat, then bulk-load the rest."""
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    t0 = datetime.fromtimestamp(lay.t0_us / 1e6, UTC)
    with sessions.begin() as s:
        drepo.add_subscription(s, kind="webhook", url="https://hooks.example.com/status-poller",
                               secret=new_secret(b"\x01" * 32), event_types=None, providers=None, now=t0)
        drepo.add_subscription(s, kind="webhook", url="https://alerts.example.com/poller", secret=new_secret(
            b"\x02" * 32), event_types=list(ALERTS), providers=None, now=t0)
        record_heartbeat(s, "dispatch", at=t0, seconds=0.25, claimed=0)
    engine.dispose()
    loader: SqliteLoader | PgLoader = PgLoader(url) if url.startswith("postgresql") else SqliteLoader(
        Path(make_url(url).database or ""))
    loader.drop_indexes(REBUILT)
    started = time.perf_counter()
    stamp, docs = Stamp(), Documents()
    step = 50_000
    for lo in range(0, lay.items, step):
        hi = min(lay.items, lo + step)
        loader.load("items", ITEM_COLUMNS, item_rows(lay, lo, hi, stamp))
        loader.load("item_labels", LABEL_COLUMNS, [(i + 1, key, value) for i in range(lo, hi) if i % 3 == 0
                                                   for key, value in (("customer", f"c{i % 5000:04d}"),
                                                                      ("env", "prod"))])
    loader.commit()
    progress(f"items loaded: {lay.items:,} ({time.perf_counter() - started:.0f} s)")
    # A few items with a long history (older snapshots first: the latest has the highest id).
    old = [(i, n) for i in range(min(lay.history_items, lay.items)) for n in range(lay.history_snapshots - 1)]
    acct_of = lay.accounts
    loader.load("snapshots", SNAPSHOT_COLUMNS, [
        (m + 1, i + 1, stamp(lay.start_us + n * 3_600_000_000), status_of(acct_of[i], n % 4), 0,
         docs.fields[(acct_of[i], n % 4, False)], docs.raw[(acct_of[i], n % 4, False)].replace(
             "@REF@", str(1_000_000 + i)))
        for m, (i, n) in enumerate(old)])
    for lo in range(0, lay.items, step):
        loader.load("snapshots", SNAPSHOT_COLUMNS,
                    snapshot_rows(lay, docs, lo, min(lay.items, lo + step), len(old) + lo + 1, stamp))
    loader.commit()
    progress(f"snapshots loaded: {len(old) + lay.items:,} ({time.perf_counter() - started:.0f} s)")
    history = History(lay, docs)
    for lo in range(0, lay.events, HISTORY_CHUNK):
        chunk = history.chunk(lo, min(lay.events, lo + HISTORY_CHUNK))
        loader.load("events", EVENT_COLUMNS, chunk.events)
        loader.load("deliveries", DELIVERY_COLUMNS, chunk.deliveries)
        loader.load("delivery_attempts", ATTEMPT_COLUMNS, chunk.attempts)
        if (lo // HISTORY_CHUNK) % 25 == 24:
            loader.commit()
            progress(f"events loaded: {lo + HISTORY_CHUNK:,} of {lay.events:,} ({time.perf_counter() - started:.0f} s)")
    loader.commit()
    progress(f"history loaded: {lay.events:,} events, {history.delivery_id:,} deliveries, "
             f"{history.attempt_id:,} attempts ({time.perf_counter() - started:.0f} s); building indexes")
    loader.finish()
    progress(f"indexes built{', vacuumed and analyzed' if isinstance(loader, PgLoader) else ''} "
             f"({time.perf_counter() - started:.0f} s)")


# -- timing -------------------------------------------------------------------------------


class SimClock:
    """The benchmark's time: starts at the data's "now", moves a tick per round. Thread-safe enough
    (one writer; readers see the old or the new value)."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at = self.at + timedelta(seconds=seconds)


CLAIM = f"dispatch claim, a chunk ({DISPATCH_CHUNK}, `repo.claim_due`)"
TICK = f"dispatch claim, the rest of the tick (limit {DISPATCH_LIMIT:,})"
POLL = f"a poll's writes, {DISPATCH_CHUNK} unchanged (load + apply)"
LOAD = "  of which `repo.load_work`"
APPLY = "  of which `repo.apply_outcomes` + commit"
DELIVERY = f"delivery claim (`deliveries.claim_due`, limit {DELIVERY_LIMIT:,})"
BACKLOG = "  the same with every pending delivery due (rolled back)"
STATUS = "`poller status` (`read_status`)"
DASHBOARD = "dashboard (`page_data`)"
METRICS = "metrics scrape (`StateCollector.collect`)"
FIRST, DEEP, FIRST_1K, DEEP_1K = ("events page, first, limit 100", "events page, deep, limit 100",
                                  "events page, first, limit 1000", "events page, deep, limit 1000")
PATHS = (CLAIM, TICK, POLL, LOAD, APPLY, DELIVERY, BACKLOG, STATUS, DASHBOARD, METRICS, FIRST, DEEP, FIRST_1K, DEEP_1K)


@dataclass
class Bench:
    """The database under test and the project objects that read and write it."""

    engine: Engine
    sessions: sessionmaker[Session]
    reads: sessionmaker[Session]
    clock: SimClock
    deep_after: str
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    policy: PollPolicy = field(default_factory=PollPolicy)
    feed: EventFeed = field(init=False)
    collector: StateCollector = field(init=False)
    page_data: Callable[..., dict[str, Any]] = field(default_factory=dashboard)

    def __post_init__(self) -> None:
        self.feed = EventFeed(self.reads, clock=self.clock)
        self.collector = StateCollector(self.sessions, TICK_S, clock=self.clock, limit_of=lambda p, a: 10.0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return (time.perf_counter() - started) * 1000, value


def poll_chunk(b: Bench, claims: list[repo.Claim], now: datetime) -> tuple[float, float]:
    """A chunk of unchanged polls as worker/polling.py stores them; the ms of its read and its write."""
    def load() -> list[repo.PollWork]:
        with b.reads.begin() as s:
            return repo.load_work(s, claims)

    load_ms, work = timed(load)
    batch: list[repo.Written] = []
    for unit in work:  # the provider said "not modified": the document is the previous one
        doc = replace(unit.previous, version=f'W/"{unit.item.id:x}"') if unit.previous else None
        assert doc is not None, "every item has a snapshot"
        outcome = after_success(unit.item, unit.state, unit.previous, doc, now=now, policy=b.policy,
                                rand=b.rng.random())
        eids = event_ids(now, b.rng.randbytes(10), len(outcome.events)) if outcome.events else []
        batch.append((unit.claim, outcome, eids, doc.version, now))

    def write() -> None:
        with b.sessions.begin() as s:
            repo.apply_outcomes(s, batch, now=now)
            repo.defer_many(s, [], now=now)

    apply_ms, _ = timed(write)
    return load_ms, apply_ms


def settle_tick(b: Bench, claims: list[repo.Claim], now: datetime) -> None:
    """Untimed: the polls of the tick's other claims, as one statement (next poll an interval on)."""
    if not claims:
        return
    items: Any = Item.__table__
    stmt = (update(items).where(items.c.id == bindparam("b_id"), items.c.lease_id == bindparam("b_lease"))
            .values(next_poll_at=bindparam("b_next", type_=items.c.next_poll_at.type), claims_since_poll=0,
                    due_since=None, last_polled_at=now, last_success_at=now, updated_at=now))
    rows = [{"b_id": c.item_id, "b_lease": c.lease_id,
             "b_next": now + timedelta(seconds=interval_of(c.item_id - 1) * (0.9 + 0.2 * b.rng.random()))}
            for c in claims]
    with b.sessions.begin() as s:
        s.connection().execute(stmt, rows)


def give_back(b: Bench, claims: list[drepo.DeliveryClaim]) -> None:
    """Untimed: make the claimed deliveries due again as they were (due since they were written)."""
    ids = [c.delivery_id for c in claims]
    with b.sessions.begin() as s:
        for lo in range(0, len(ids), 500):
            s.execute(update(Delivery).where(Delivery.id.in_(ids[lo:lo + 500]))
                      .values(next_attempt_at=Delivery.created_at).execution_options(synchronize_session=False))


def claim_backlog(b: Bench, now: datetime) -> tuple[float, int]:
    """The delivery claim when every pending delivery is due (a subscriber back after an outage):
    made due in the claim's transaction, which is rolled back (the claim is timed, not the commit)."""
    with b.sessions() as s:
        s.execute(update(Delivery).where(Delivery.state == "pending", Delivery.next_attempt_at > now)
                  .values(next_attempt_at=Delivery.created_at).execution_options(synchronize_session=False))
        ms, claims = timed(lambda: drepo.claim_due(s, now=now, lease_s=DELIVERY_LEASE_S, limit=DELIVERY_LIMIT))
        s.rollback()
    return ms, len(claims)


def one_round(b: Bench) -> dict[str, tuple[float, int]]:
    """One tick's worth of every path; returns path -> (ms, rows)."""
    b.clock.advance(TICK_S)
    now = b.clock()
    out: dict[str, tuple[float, int]] = {}

    def claim(limit: int) -> list[repo.Claim]:
        with b.sessions.begin() as s:
            return repo.claim_due(s, now=now, lease_s=LEASE_S, limit=limit, lookahead_s=TICK_S / 2)

    ms, chunk = timed(lambda: claim(DISPATCH_CHUNK))
    out[CLAIM] = (ms, len(chunk))
    ms, rest = timed(lambda: claim(DISPATCH_LIMIT))
    out[TICK] = (ms, len(rest))
    with b.sessions.begin() as s:
        record_heartbeat(s, "dispatch", at=now, seconds=ms / 1000, claimed=len(chunk) + len(rest))
    load_ms, apply_ms = poll_chunk(b, chunk, now)
    out[POLL], out[LOAD], out[APPLY] = (load_ms + apply_ms, len(chunk)), (load_ms, len(chunk)), (apply_ms, len(chunk))
    settle_tick(b, rest, now)

    def claim_deliveries() -> list[drepo.DeliveryClaim]:
        with b.sessions.begin() as s:
            return drepo.claim_due(s, now=now, lease_s=DELIVERY_LEASE_S, limit=DELIVERY_LIMIT)

    ms, dclaims = timed(claim_deliveries)
    out[DELIVERY] = (ms, len(dclaims))
    give_back(b, dclaims)
    out[BACKLOG] = claim_backlog(b, now)
    ms, _ = timed(lambda: read_status(b.sessions, tick_s=TICK_S, clock=b.clock, limit_of=lambda p, a: 10.0))
    out[STATUS] = (ms, 1)
    ms, data = timed(lambda: b.page_data(b.reads, TICK_S, clock=b.clock))
    out[DASHBOARD] = (ms, len(data["events"]))
    ms, families = timed(lambda: list(b.collector.collect()))
    out[METRICS] = (ms, len(families))
    for name, after, limit in ((FIRST, None, 100), (DEEP, b.deep_after, 100), (FIRST_1K, None, 1000),
                               (DEEP_1K, b.deep_after, 1000)):
        started = time.perf_counter()
        rows, _more = b.feed.page(after=after, limit=limit)
        out[name] = ((time.perf_counter() - started) * 1000, len(rows))
    return out


@dataclass
class Samples:
    """Timings per path over rounds."""

    ms: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    rows: dict[str, list[int]] = field(default_factory=lambda: {p: [] for p in PATHS})

    def add(self, result: dict[str, tuple[float, int]]) -> None:
        for path, (ms, rows) in result.items():
            self.ms[path].append(ms)
            self.rows[path].append(rows)


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def target_of(path: str, rows: float, limit: float) -> float:
    """The path's target: ``limit`` ms, and for the tick's claim 1 s per 10,000 claimed (issue 3)."""
    if path == TICK:
        return max(limit, DISPATCH_MS_PER_10K * rows / 10_000)
    return limit


def table(samples: Samples, limit: float) -> list[str]:
    """A Markdown table of one phase."""
    lines = ["| path | rows (median) | median ms | p95 ms | max ms | target ms | |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for path in PATHS:
        values = samples.ms[path]
        if not values:
            continue
        rows = statistics.median(samples.rows[path])
        target = target_of(path, rows, limit)
        sub = path.startswith("  ")
        verdict = "" if sub else "ok" if p95(values) <= target else "**over**"
        lines.append(f"| {path} | {rows:,.0f} | {statistics.median(values):.1f} | {p95(values):.1f} | "
                     f"{max(values):.1f} | {'' if sub else f'{target:.0f}'} | {verdict} |")
    return lines


def worst(samples: Samples, limit: float) -> str:
    """The path furthest over its target by p95 (or "none")."""
    over = [(p95(samples.ms[p]) / target_of(p, statistics.median(samples.rows[p]), limit), p) for p in PATHS
            if samples.ms[p] and not p.startswith("  ")]
    ratio, path = max(over) if over else (0.0, "")
    return f"{path.split(' (')[0]} p95 {p95(samples.ms[path]):.0f} ms" if ratio > 1 else "none"


# -- running ------------------------------------------------------------------------------


def ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def db_bytes(engine: Engine) -> int:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
    path = Path(engine.url.database or "")
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def deep_cursor(sessions: sessionmaker[Session]) -> str:
    """The id of the event in the middle of the stream."""
    with sessions.begin() as s:
        low = s.scalar(select(func.min(Event.position))) or 0
        high = s.scalar(select(func.max(Event.position))) or 0
        found = s.scalar(select(Event.id).where(Event.position >= (low + high) // 2).order_by(Event.position)
                         .limit(1))
    if found is None:
        raise SystemExit("the database has no events")
    return found


def run(args: argparse.Namespace, url: str, fresh: bool) -> None:
    crypto.install(crypto.Keyring.parse(BENCH_KEY))
    populate_s = None
    if fresh:
        pending = min(args.events, args.pending if args.pending is not None else
                      max(20, min(5000, args.events // 3000)))
        lay = Layout(items=args.items, events=args.events, attempts=args.attempts, days=args.days,
                     pending=pending, due=min(pending, args.due_deliveries), t0_us=int(time.time()) * 1_000_000)
        progress(f"populating {url}")
        started = time.perf_counter()
        populate(url, lay)
        populate_s = time.perf_counter() - started
    engine = make_engine(url)
    sessions, reads = make_sessionmaker(engine), make_sessionmaker(engine, read_only=True)
    with sessions.begin() as s:
        beat = s.get(Heartbeat, "dispatch")
        size = store_size(s)
        oldest = s.scalar(select(Event.created_at).order_by(Event.position).limit(1))
        middle = ((s.scalar(select(func.min(Event.position))) or 0) + (s.scalar(select(func.max(Event.position)))
                                                                         or 0)) // 2
        avg_data = s.scalar(select(func.avg(func.length(Event.data.cast(Text()))))
                            .where(Event.position.between(middle, middle + 10_000)))
    if beat is None or oldest is None:
        raise SystemExit("not a database this benchmark populated (no dispatch heartbeat or no events)")
    bench = Bench(engine, sessions, reads, SimClock(beat.at), deep_cursor(reads))
    pg_version = None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            pg_version = conn.execute(text("SHOW server_version")).scalar_one()
    size_bytes = db_bytes(engine)
    rows_text = ", ".join(f"{t} {n:,}{'~' if t in size.estimated else ''}" for t, n in size.rows.items())
    print(f"# bench/store.py, {time.strftime('%Y-%m-%d %H:%M')}: {engine.dialect.name}, {rows_text}")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {ram_gib():.0f} GiB RAM, Python "
          f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, PostgreSQL {pg_version or '-'}; "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"# populate {f'{populate_s:.0f} s' if populate_s is not None else '(reused)'}, database "
          f"{size_bytes / 1e9:.2f} GB, event data {float(avg_data or 0):.0f} bytes on average, "
          f"simulated clock from {beat.at:%Y-%m-%d %H:%M:%S} UTC")
    print()

    for _ in range(args.warmup):
        one_round(bench)
    quiet = Samples()
    for _ in range(args.runs):
        quiet.add(one_round(bench))
    print(f"## Each path, {args.runs} rounds after {args.warmup} warm-up rounds")
    print()
    print("\n".join(table(quiet, TARGET_MS)))
    print()
    if args.no_prune:
        return

    # The oldest day goes: the events (and their deliveries and attempts) and the attempts older than
    # a day after the oldest event; the rest of the retention as beat's prune has it by default.
    cut = oldest + timedelta(days=1)
    defaults = Retention()
    cutoffs = Cutoffs(events=cut, attempts=cut, snapshots_keep=defaults.snapshots_keep,
                      finished_items=bench.clock() - timedelta(seconds=defaults.finished_items_s or 0))
    result: dict[str, Any] = {}

    def prune() -> None:
        started = time.perf_counter()
        try:
            result["removed"] = Pruner(sessions, clock=bench.clock).run(cutoffs)
        except Exception as err:  # noqa: BLE001 - reported below, after the rounds stop
            result["error"] = err
        result["seconds"] = time.perf_counter() - started

    during = Samples()
    thread = threading.Thread(target=prune, name="prune")
    thread.start()
    while thread.is_alive() or not during.ms[CLAIM]:
        during.add(one_round(bench))
    thread.join()
    if "error" in result:
        raise SystemExit(f"the prune failed: {result['error']!r}")
    removed = ", ".join(f"{t} {n:,}" for t, n in result["removed"].items())
    print(f"## During a prune of one day (cutoff {cut:%Y-%m-%d %H:%M:%S} UTC): {result['seconds']:.1f} s, "
          f"removed {removed}; {len(during.ms[CLAIM])} rounds")
    print()
    print("\n".join(table(during, PRUNE_TARGET_MS)))
    print()

    def med(samples: Samples, path: str) -> str:
        return f"{statistics.median(samples.ms[path]):.0f}"

    print("| database | items | events | attempts | populate | size | dispatch chunk | tick (claimed) | poll writes "
          "| delivery claim | status | dashboard | metrics | events first / deep | prune of a day | worst during "
          "prune |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {engine.dialect.name} | {size.rows['items']:,} | {size.rows['events']:,} | "
          f"{size.rows['delivery_attempts']:,} | {f'{populate_s:.0f} s' if populate_s is not None else '-'} | "
          f"{size_bytes / 1e9:.1f} GB | {med(quiet, CLAIM)} ms | {med(quiet, TICK)} ms "
          f"({statistics.median(quiet.rows[TICK]):,.0f}) | {med(quiet, POLL)} ms | {med(quiet, DELIVERY)} ms | "
          f"{med(quiet, STATUS)} ms | {med(quiet, DASHBOARD)} ms | {med(quiet, METRICS)} ms | "
          f"{med(quiet, FIRST)} / {med(quiet, DEEP)} ms | {result['seconds']:.1f} s | "
          f"{worst(during, PRUNE_TARGET_MS)} |")
    engine.dispose()


def main() -> None:
    """Parse arguments, populate (or reuse) a database, time the paths, print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("TEST_DATABASE_URL"),
                        help="an admin URL beside which the scratch database is made (default TEST_DATABASE_URL)")
    parser.add_argument("--path", type=Path, help="the SQLite file to populate (default: in a temporary directory)")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--attempts", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30, help="the events and attempts span this many days")
    parser.add_argument("--pending", type=int, default=None,
                        help="deliveries still pending, the newest (default events/3000, 20 to 5000)")
    parser.add_argument("--due-deliveries", type=int, default=200,
                        help="of the pending deliveries, the newest this many are due; the rest wait for a retry")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-prune", action="store_true", help="skip the prune phase")
    parser.add_argument("--keep", action="store_true", help="keep the populated database (to --reuse it)")
    parser.add_argument("--reuse", metavar="PATH_OR_URL", help="a database populated by an earlier --keep run")
    args = parser.parse_args()
    if args.items < 1 or args.events < 1 or args.days < 2:
        parser.error("at least one item, one event and two days")
    if args.reuse:
        url = args.reuse if "://" in args.reuse else sqlite_url(Path(args.reuse).resolve())
        if not url.startswith("postgresql") and not Path(make_url(url).database or "").exists():
            parser.error(f"{args.reuse} does not exist")
        run(args, url, fresh=False)
        return
    if args.db == "postgresql":
        if not args.pg_url:
            parser.error("--db postgresql needs --pg-url or TEST_DATABASE_URL")
        url = create_database(args.pg_url, f"poller_bench_store_{uuid.uuid4().hex[:8]}")
        try:
            run(args, url, fresh=True)
        finally:
            if args.keep:
                print(f"kept: --reuse {url}")
            else:
                drop_database(args.pg_url, url)
        return
    if args.path is not None:
        if args.path.exists():
            parser.error(f"{args.path} exists: --reuse it, or remove it first")
        run(args, sqlite_url(args.path.resolve()), fresh=True)
        if args.keep:
            print(f"kept: --reuse {args.path}")
        else:
            for p in (args.path, Path(f"{args.path}-wal"), Path(f"{args.path}-shm")):
                p.unlink(missing_ok=True)
        return
    home = Path(tempfile.mkdtemp(prefix="store-bench-"))
    try:
        run(args, sqlite_url(home / "poller.db"), fresh=True)
    finally:
        if args.keep:
            print(f"kept: --reuse {home / 'poller.db'}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
