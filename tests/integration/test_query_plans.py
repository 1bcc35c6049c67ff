"""Issue 13: every query on the hot and the operator paths uses an index, on both databases.

A small store is populated, each path runs for real while every SQL statement it sends is captured
with its parameters, and each statement is then explained: SQLite's ``EXPLAIN QUERY PLAN``, and
PostgreSQL's ``EXPLAIN`` with ``enable_seqscan = off``, so its planner takes an index wherever one
can serve (a sequential scan left in the plan means no index can). A statement fails when it reads
the whole of a large table: a table scan, or a scan of a whole index, one without a condition on
its leading column (a covering index of a million rows is still a million rows). A tiny table
(subscriptions, heartbeats, provider accounts, retention marks) may be scanned; so may a partial
index, which holds only the rows its condition admits (the failing items, say).

A few statements read a whole large table, or its first rows, by their nature; ``BY_NATURE`` names
each, the table and the index it may scan, and why that is fine.

The plans are listed per path as the test runs; ``QP_PLANS=1`` lists each statement's plan too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event, update

from api.dashboard import page_data
from tests.receiver import Receiver
from tests.rows import update_items
from tests.stack import Stack
from worker.delivery import DeliveryPolicy, DeliveryService
from worker.feed import EventFeed
from worker.metrics_state import StateCollector
from worker.retention import Retention
from worker.status import read_status
from worker.store import repo
from worker.store.db import make_engine
from worker.store.models import Event, Item
from worker.store.prune import Pruner
from worker.webhooks.sender import WebhookSender

DAY = 86400.0
#: The tables that grow with use; the others stay a few rows long.
LARGE = ("items", "item_schedules", "snapshots", "events", "deliveries", "delivery_attempts")


@dataclass(frozen=True)
class Allowed:
    """A statement that reads all of ``table`` by its nature, from ``index`` (None: any way)."""

    pattern: str  # a regular expression the statement matches (whitespace collapsed)
    table: str
    index: str | None
    why: str


_EXACT = "store_size counts a table exactly only below sizes.EXACT_BELOW (10,000) rows; above, it estimates"
_FIRST = "the first or last rows by the primary key, nothing filtered: the scan stops after LIMIT rows"

BY_NATURE = [
    *(Allowed(rf"^SELECT count\({t}\.(id|position)\) AS count_1 FROM {t}$", t, None, _EXACT) for t in LARGE),
    Allowed(r"^SELECT events\.created_at FROM events ORDER BY events\.position LIMIT \S+( OFFSET \S+)?$",
            "events", None, _FIRST),  # the oldest event, `poller status` and the metrics
    Allowed(r"^SELECT events\.\w+, .* FROM events ORDER BY events\.position DESC LIMIT \S+( OFFSET \S+)?$",
            "events", None, _FIRST),  # the dashboard's latest events
    # Nothing counts every item or every delivery: the running counts (worker.store.tallies) say it.
]

#: A whole read in a plan: the table, and the index it goes through (None: the table itself).
Scan = tuple[str, "str | None"]


@dataclass
class Checked:
    """One captured statement, its plan and what in the plan reads a whole large table."""

    path: str
    sql: str
    params: Any
    plan: list[str] = field(default_factory=list)
    scans: list[str] = field(default_factory=list)  # whole reads no reason allows
    allowed: list[str] = field(default_factory=list)  # why, for those BY_NATURE allows


def one_line(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def needs_plan(sql: str) -> bool:
    """DML and queries that name a large table; not DDL, PRAGMA, transaction control, nor an INSERT
    of VALUES only (which reads no table)."""
    flat = one_line(sql)
    verb = flat.split(" ", 1)[0].upper()
    if verb not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
        return False
    if verb == "INSERT" and not re.search(r"\bFROM\s+(?!\(VALUES\b)", flat, re.IGNORECASE):
        return False
    return any(re.search(rf"\b{t}\b", flat) for t in LARGE)


# -- plans ---------------------------------------------------------------------------------

def sqlite_plan(conn: Any, sql: str, params: Any) -> tuple[list[str], list[Scan]]:
    """The plan's lines and its whole reads: ``SCAN t`` reads the table, ``SCAN t USING [COVERING]
    INDEX i`` all of index i (unless i is partial), an automatic index is built by reading the
    table; ``SEARCH t USING ... (a=?)`` reads a range of an index by its leading columns."""
    lines = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    partial = {row[1] for t in LARGE for row in conn.exec_driver_sql(f"PRAGMA index_list({t})") if row[4]}
    scans: list[Scan] = []
    for detail in lines:
        m = re.match(r"(SCAN|SEARCH) (\w+)(?: AS \w+)?(?: USING (?:COVERING )?INDEX (\w+))?", detail)
        if m is not None and m.group(2) in LARGE and (
                (m.group(1) == "SCAN" and m.group(3) not in partial) or "AUTOMATIC" in detail):
            scans.append((m.group(2), m.group(3)))
    return lines, scans


#: What PostgreSQL may not plan: sequential scans, so it uses an index wherever one can serve.
PG_OFF = ("enable_seqscan",)
#: Rows added to each large table before explaining (rolled back after): healthy items polled on
#: schedule, their recent events delivered, newer than any cutoff or due time of the test, as most
#: of a store is. PostgreSQL plans by the tables' size and statistics: at the test's few rows,
#: reading a whole index costs next to nothing, and it would choose that.
PG_FILL_ROWS = 20_000
_LATER = "TIMESTAMPTZ '2100-01-01 00:00:00+00'"
PG_FILL = (
    "INSERT INTO items (provider, account, kind, ref, interval_s, state, "
    "consecutive_failures, failing, event_seq, created_at, updated_at) "
    f"SELECT 'filler', 'default', 'order', n::text, 60, 'active', 0, false, "
    f"1, {_LATER}, {_LATER} FROM generate_series(1, %(n)s) AS n",
    "INSERT INTO item_schedules (item_id, provider, next_poll_at, lease_id, claims_since_poll) "
    f"SELECT id, provider, {_LATER} + id * interval '1 second', 1, 0 FROM items WHERE provider = 'filler'",
    "INSERT INTO snapshots (item_id, taken_at, status, terminal, fields) "
    f"SELECT id, {_LATER}, 'sent', false, '{{}}' FROM items WHERE provider = 'filler'",
    "INSERT INTO events (id, item_id, seq, type, data, created_at) "
    f"SELECT 'evt_filler_' || id, id, 1, 'status.observed', '{{}}', {_LATER} FROM items WHERE provider = 'filler'",
    "INSERT INTO deliveries (subscription_id, event_position, item_id, state, attempts, lease_id, created_at, "
    "updated_at, finished_at) SELECT (SELECT min(id) FROM subscriptions), position, item_id, 'succeeded', 1, 1, "
    f"{_LATER}, {_LATER}, {_LATER} FROM events WHERE id LIKE 'evt_filler_%%'",
    "INSERT INTO delivery_attempts (delivery_id, attempted_at, status_code, latency_ms, outcome) "
    f"SELECT id, {_LATER}, 200, 1.0, 'succeeded' FROM deliveries WHERE finished_at = {_LATER}",
)


def pg_plan(conn: Any, sql: str, params: Any) -> tuple[list[str], list[Scan]]:
    """The plan's nodes and its whole reads: a Seq Scan (seq scans are off, so one left means no
    index can serve), or a scan of a whole index, without a condition on its leading column
    (PostgreSQL checks a condition on a later column against every entry), unless it is partial."""
    doc = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar()
    doc = json.loads(doc) if isinstance(doc, str) else doc
    # Each index's leading column, or expression (ix_items_due's coalesce), as PostgreSQL prints it.
    leading = {name: (column, part) for name, column, part in conn.exec_driver_sql(
        "SELECT c.relname, pg_get_indexdef(i.indexrelid, 1, true), i.indpred IS NOT NULL FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid")}
    lines: list[str] = []
    scans: list[Scan] = []

    def walk(node: dict[str, Any], depth: int, heap: str | None) -> None:
        kind, table, index = node["Node Type"], node.get("Relation Name") or heap, node.get("Index Name")
        cond = node.get("Index Cond") or node.get("Recheck Cond")
        lines.append("  " * depth + kind + (f" using {index}" if index else "") + (f" on {table}" if table else "")
                     + (f" ({cond})" if cond else "") + (f" filter {node['Filter']}" if node.get("Filter") else ""))
        whole = kind == "Seq Scan"
        if index is not None:  # an index or index-only scan, or a bitmap heap scan's index scan
            column, part = leading[index]
            cond_text = node.get("Index Cond") or ""
            used = (column.lower() in cond_text.lower() if "(" in column
                    else re.search(rf'\b"?{re.escape(column.strip(chr(34)))}"?\b', cond_text))
            whole = not part and not used
        if table in LARGE and whole:
            scans.append((table, index))
        for child in node.get("Plans", []):
            walk(child, depth + 1, table)

    walk(doc[0]["Plan"], 0, None)
    return lines, scans


class Recorder:
    """Captures what each path sends to the database, and explains it on a connection of its own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.path: str | None = None
        self.checked: list[Checked] = []
        event.listen(engine, "before_cursor_execute", self._capture)

    def _capture(self, conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if self.path is None or not needs_plan(sql) or any(c.path == self.path and c.sql == sql for c in self.checked):
            return
        self.checked.append(Checked(self.path, sql, params[0] if many and params else params))

    @contextmanager
    def run(self, path: str) -> Iterator[None]:
        self.path = path
        try:
            yield
        finally:
            self.path = None

    def explain(self) -> None:
        """Explain every statement captured, in one transaction that is rolled back. On PostgreSQL
        the large tables are filled first (``PG_FILL``) and analyzed, so that the planner costs them
        as the large tables they become."""
        event.remove(self.engine, "before_cursor_execute", self._capture)
        explainer = make_engine(self.engine.url.render_as_string(hide_password=False))
        try:
            with explainer.connect() as conn, conn.begin() as tx:
                postgres = conn.dialect.name == "postgresql"
                if postgres:
                    for statement in PG_FILL:
                        conn.exec_driver_sql(statement, {"n": PG_FILL_ROWS})
                    conn.exec_driver_sql(f"ANALYZE {', '.join(LARGE)}")
                    for setting in PG_OFF:
                        conn.exec_driver_sql(f"SET LOCAL {setting} = off")
                for c in self.checked:
                    c.plan, scans = (pg_plan if postgres else sqlite_plan)(conn, c.sql, c.params)
                    for table, index in scans:
                        why = next((a.why for a in BY_NATURE if a.table == table and a.index in (None, index)
                                    and re.search(a.pattern, one_line(c.sql))), None)
                        (c.allowed if why else c.scans).append(why or f"{table} ({index or 'the table'})")
                tx.rollback()
        finally:
            explainer.dispose()

    def report(self, plans: bool) -> str:
        out = []
        for path in dict.fromkeys(c.path for c in self.checked):
            mine = [c for c in self.checked if c.path == path]
            out.append(f"{path}: {len(mine)} statements")
            for c in mine:
                verdict = f"READS ALL OF {', '.join(c.scans)}" if c.scans else "by nature" if c.allowed else "ok"
                out.append(f"  [{verdict}] {one_line(c.sql)[:160]}")
                out.extend(f"      {line}" for line in (c.plan if plans else ()))
        return "\n".join(out)


# -- the store and the paths ---------------------------------------------------------------

def populate(stack: Stack, receiver: Receiver) -> tuple[list[int], int]:
    """Four orders through three changes each, delivered to a healthy and to a failing webhook
    (snapshots, events, deliveries succeeded and retrying, attempts); one item failing to poll,
    one finished. Returns the item ids and the failing subscription's."""
    stack.subs.add(receiver.url)
    failing = stack.subs.add("http://127.0.0.1:1/refused")[0].id  # nothing listens: its deliveries retry
    ids = stack.orders(4, stages=2)
    stack.deliver()
    with stack.sessions.begin() as s:
        s.execute(update(Item).where(Item.id == ids[1]).values(consecutive_failures=6, failing=True))
        update_items(s, Item.id == ids[2], state="terminal", next_poll_at=None)
    return ids, failing


def run_paths(stack: Stack, rec: Recorder, ids: list[int], failing: int) -> None:
    """Each path of the issue, for real."""
    clock = stack.clock
    claims: list[repo.Claim] = []
    clock.advance(10)
    with rec.run("dispatch claim (repo.claim_due)"):
        stack.poller.dispatch_due(claims.extend, lease_s=30, limit=100, chunk_size=100)
    assert claims
    with rec.run("poll writes (apply_outcomes, apply_outcome, defer_many)"):
        stack.poller.poll_claims(claims)  # a new stage: snapshot, events, deliveries (apply_outcome)
        clock.advance(10)
        with stack.sessions.begin() as s:
            quiet = repo.claim_due(s, now=clock(), lease_s=30, limit=100)
        stack.poller.poll_claims(quiet)  # nothing changed: apply_outcomes' executemany
        clock.advance(10)
        with stack.sessions.begin() as s:
            deferred = repo.claim_due(s, now=clock(), lease_s=30, limit=100)
            repo.defer_many(s, [(c, clock() + timedelta(seconds=60)) for c in deferred], now=clock())
    path = "delivery claim and delivery (delivery_claims.claim_due, DeliveryService.deliver)"
    with rec.run(path):
        stack.deliver()
    # Our own policy refuses the http target: a refusal, then another (the refusal's row is kept current).
    refusing = DeliveryService(stack.sessions, WebhookSender(timeout_s=2), DeliveryPolicy(), clock=clock)
    for _ in range(2):
        stack.next_due()
        with rec.run(path):
            refusing.dispatch_due(refusing.deliver, lease_s=60, limit=1000, chunk_size=100)
    with rec.run("poller status (read_status)"):
        read_status(stack.sessions, tick_s=1.0, clock=clock)
    with rec.run("dashboard (page_data)"):
        page_data(stack.sessions, 1.0, clock)
    with rec.run("metrics scrape (StateCollector.collect)"):
        list(StateCollector(stack.sessions, 1.0, clock=clock).collect())
    feed = EventFeed(stack.sessions, clock=clock, hole_grace_s=3600)  # recent: the holes check runs too
    with rec.run("events API, first page"):
        feed.page(after=None, limit=5)
    events = stack.rows(Event)
    with rec.run("events API, deep page"):
        feed.page(after=events[len(events) // 2].id, limit=5)
    with stack.sessions.begin() as s:
        repo.delete_item(s, ids[3])  # untracked: its events become orphans
    stack.subs.set_enabled(failing, False)  # what it never received may go now
    clock.advance(100 * DAY)
    retention = Retention(events_s=30 * DAY, snapshots_keep=1, attempts_s=30 * DAY, finished_items_s=90 * DAY)
    with rec.run("prune (Pruner.run)"):
        removed = Pruner(stack.sessions, clock=clock, batch=2).run(retention.cutoffs(clock()))
    assert all(removed.values()), removed


#: Statements each path must have sent (a path that quietly did nothing would check nothing).
EXPECTED: dict[str, list[str]] = {
    "dispatch claim": [r"^UPDATE item_schedules SET next_poll_at"],
    "poll writes": [r"^UPDATE items SET .* RETURNING .*event_seq",  # apply_outcome
                    # quiet polls (worker.store.quiet): PostgreSQL from unnest(), SQLite executemany
                    r"^UPDATE item_schedules (AS s SET next_poll_at = v\.|SET next_poll_at = .* WHERE item_id = \?$)",
                    r"^UPDATE items (AS i SET last_polled_at = v\.|SET last_polled_at = .* WHERE id = :id$)",
                    # defer_many
                    r"^UPDATE item_schedules SET next_poll_at=[^,]+, claims_since_poll=[^ ]+ WHERE .*lease_id"],
    "delivery claim": [r"^UPDATE deliveries SET lease_id=.*, leased_until=", r"FROM delivery_attempts WHERE"],
    # The counts come from the tallies and item_failures (small by design), unchecked.
    "poller status": [r"FROM item_schedules WHERE", r"FROM deliveries WHERE"],
    "dashboard": [r"ORDER BY items\.consecutive_failures DESC"],
    "metrics scrape": [r"FROM deliveries WHERE deliveries\.state", r"FROM item_schedules WHERE"],
    "events API, first page": [r"FROM events WHERE events\.position >"],
    "events API, deep page": [r"FROM events WHERE events\.id ="],
    "prune": [r"^DELETE FROM events", r"^DELETE FROM snapshots", r"^DELETE FROM items",
              r"^DELETE FROM delivery_attempts"],
}


def test_every_path_uses_an_index(engine, stack, receiver, capsys: Any) -> None:
    ids, failing = populate(stack, receiver)
    rec = Recorder(engine)
    run_paths(stack, rec, ids, failing)
    rec.explain()
    report = rec.report(plans=bool(os.environ.get("QP_PLANS")))
    with capsys.disabled():
        print(f"\nstatements checked on {engine.dialect.name}, by path:\n{report}")
    for prefix, patterns in EXPECTED.items():
        sent = [one_line(c.sql) for c in rec.checked if c.path.startswith(prefix)]
        for pattern in patterns:
            assert any(re.search(pattern, s) for s in sent), f"{prefix}: no statement matches {pattern!r}"
    # The claim reads the due index in its own order (migration 0013): no sort of every due row.
    claims = [c for c in rec.checked if c.path.startswith("dispatch claim")
              and one_line(c.sql).startswith("UPDATE item_schedules SET next_poll_at")]
    sorting = [line for c in claims for line in c.plan if re.search(r"^\s*(Incremental )?Sort\b|TEMP B-TREE", line)]
    assert claims and not sorting, "\n".join("\n".join(c.plan) for c in claims)
    scanning = [c for c in rec.checked if c.scans]
    assert not scanning, "\n\n".join(
        f"{c.path} reads all of {', '.join(c.scans)}:\n{one_line(c.sql)}\nparameters: {c.params}\nplan:\n  "
        + "\n  ".join(c.plan) for c in scanning)
