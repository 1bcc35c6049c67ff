"""The paths bench/store.py times, with the project's own code and its shipped settings.

``one_round`` is what a dispatch tick brings (bench/store.py's docstring says what that is); what it
claims beyond the polled chunk is settled or given back untimed, so the store stays in its steady state
from round to round.
"""

from __future__ import annotations

import importlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, bindparam, update
from sqlalchemy.orm import Session, sessionmaker
from store_data import interval_of

from config.settings import Settings
from worker.documents import document_digest
from worker.feed import EventFeed
from worker.ids import event_ids
from worker.metrics_state import StateCollector
from worker.policy import PollPolicy, after_success
from worker.status import read_status, record_heartbeat
from worker.store import delivery_claims as drepo
from worker.store import repo
from worker.store.db import checkpoint
from worker.store.models import Delivery, Item, Schedule

_SETTINGS = Settings.model_fields
#: The shipped defaults the paths run with.
TICK_S = float(_SETTINGS["tick_seconds"].default)
LEASE_S = float(_SETTINGS["lease_seconds"].default)
DISPATCH_LIMIT = int(_SETTINGS["dispatch_limit"].default)
DISPATCH_CHUNK = int(_SETTINGS["dispatch_chunk"].default)
DELIVERY_LEASE_S = float(_SETTINGS["delivery_lease_seconds"].default)
DELIVERY_LIMIT = int(_SETTINGS["delivery_limit"].default)


def dashboard() -> Callable[..., dict[str, Any]]:
    """``api.dashboard.page_data``, imported by name: mypy, checking this file, takes bench/ for the
    base of its imports and so bench/api.py for the ``api`` package."""
    return cast(Callable[..., dict[str, Any]], importlib.import_module("api.dashboard").page_data)


class SimClock:
    """The benchmark's time: starts at the data's "now", moves a tick per round. Thread-safe enough
    (one writer; readers see the old or the new value)."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at = self.at + timedelta(seconds=seconds)


#: The tick's claim as `dispatch_due` makes it (one claim, limit POLLER_DISPATCH_LIMIT), here in two
#: parts: the first chunk, which pays for visiting what the last tick left, then the rest.
CLAIMS = f"dispatch claim, one tick's (limit {DISPATCH_LIMIT:,}: the two parts below)"
CLAIM = f"  of which the first chunk ({DISPATCH_CHUNK}, `repo.claim_due`)"
TICK = "  of which the rest of the tick"
POLL = f"a poll's writes, {DISPATCH_CHUNK} unchanged (load + apply)"
LOAD = "  of which `repo.load_work`"
APPLY = "  of which the digests, decisions, `repo.apply_outcomes` + commit"
DELIVERY = f"delivery claim (`delivery_claims.claim_due`, limit {DELIVERY_LIMIT:,})"
BACKLOG = "  the same with every pending delivery due (rolled back)"
STATUS = "`poller status` (`read_status`)"
DASHBOARD = "dashboard (`page_data`)"
METRICS = "metrics scrape (`StateCollector.collect`)"
FIRST, DEEP, FIRST_1K, DEEP_1K = ("events page, first, limit 100", "events page, deep, limit 100",
                                  "events page, first, limit 1000", "events page, deep, limit 1000")
PATHS = (CLAIMS, CLAIM, TICK, POLL, LOAD, APPLY, DELIVERY, BACKLOG, STATUS, DASHBOARD, METRICS,
         FIRST, DEEP, FIRST_1K, DEEP_1K)


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
        # Read-only sessions, as config.wiring gives the metrics scrape and `poller status`.
        self.collector = StateCollector(self.reads, TICK_S, clock=self.clock, limit_of=lambda p, a: 10.0)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return (time.perf_counter() - started) * 1000, value


def poll_chunk(b: Bench, claims: list[repo.Claim], now: datetime) -> tuple[float, float]:
    """A chunk of unchanged polls as worker/polling.py stores them; the ms of its read and its write.

    The providers answer with the documents the items have (read untimed: in production they come
    over HTTP); as in the chunk poller, each is compared with its item's digest, and no snapshot is
    read for an unchanged one."""
    with b.reads.begin() as s:
        answers = repo.latest_documents(s, [c.item_id for c in claims])

    def load() -> list[repo.PollWork]:
        with b.reads.begin() as s:
            return repo.load_work(s, claims, documents=False)

    load_ms, work = timed(load)

    def write() -> None:
        batch: list[repo.Written] = []
        for unit in work:
            doc = replace(answers[unit.item.id], version=f'W/"{unit.item.id:x}"')
            assert document_digest(doc) == unit.digest, "the item's digest is its latest snapshot's"
            outcome = after_success(unit.item, unit.state, doc, doc, now=now, policy=b.policy, rand=b.rng.random())
            eids = event_ids(now, b.rng.randbytes(10), len(outcome.events)) if outcome.events else []
            batch.append((unit.claim, outcome, eids, doc.version, now))
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
    schedules: Any = Schedule.__table__
    moved = (update(schedules)
             .where(schedules.c.item_id == bindparam("b_id"), schedules.c.lease_id == bindparam("b_lease"))
             .values(next_poll_at=bindparam("b_next", type_=schedules.c.next_poll_at.type), claims_since_poll=0,
                     due_since=None))
    polled = update(items).where(items.c.id == bindparam("b_id")).values(last_polled_at=now, last_success_at=now)
    rows = [{"b_id": c.item_id, "b_lease": c.lease_id,
             "b_next": now + timedelta(seconds=interval_of(c.item_id - 1) * (0.9 + 0.2 * b.rng.random()))}
            for c in claims]
    with b.sessions.begin() as s:  # as repo.apply_outcomes writes quiet polls
        s.connection().execute(moved, rows)
        s.connection().execute(polled, [{"b_id": c.item_id} for c in claims])


def give_back(b: Bench, claims: list[drepo.DeliveryClaim]) -> None:
    """Untimed: hand the claimed deliveries back (lease cleared), due as they were since written."""
    ids = [c.delivery_id for c in claims]
    with b.sessions.begin() as s:
        for lo in range(0, len(ids), 500):
            s.execute(update(Delivery).where(Delivery.id.in_(ids[lo:lo + 500]))
                      .values(leased_until=None).execution_options(synchronize_session=False))


def claim_backlog(b: Bench, now: datetime) -> tuple[float, int]:
    """The delivery claim when every pending delivery is due (a subscriber back after an outage):
    made due in the claim's transaction, which is rolled back (the claim is timed, not the commit).

    Timed apart from the rounds (bench/store.py does it after them): on PostgreSQL each rolled-back
    update leaves every pending delivery a dead version in the due range, which the next rounds'
    delivery claims would visit (one round after another, 257 ms instead of 25 after 200 rounds);
    production has no such rollbacks."""
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
    out[CLAIMS] = (out[CLAIM][0] + ms, len(chunk) + len(rest))
    checkpoint(b.engine)  # untimed, as the tick's (PollerService.dispatch_due) after its claim
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
    ms, _ = timed(lambda: read_status(b.reads, tick_s=TICK_S, clock=b.clock, limit_of=lambda p, a: 10.0))
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
