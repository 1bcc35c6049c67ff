"""Benchmark the store at scale (issue 13): the hot paths with a million items and ten million events.

Populates a migrated database (the project's migrations, so the indexes are the real ones) with
``--items`` tracked items, ``--events`` events spread evenly over the last ``--days`` days, one
delivery per event to a catch-all webhook subscription (plus one per alert event to a second,
filtered one) and ``--attempts`` delivery attempts; then times, with the project's own code, the
paths that run all day: the dispatch claim, a poll's writes, the delivery claim, `poller status`,
the dashboard, the metrics scrape and the events API's first and a deep page. Then it prunes the
oldest day (a day's worth: events/D) in a process of its own, as beat's daily prune does (or, with
--prune-in thread, in a thread of the timed process), and times the same paths again meanwhile.
Rounds start a tick (5 s) apart, as in production.

    .venv/bin/python bench/store.py --db sqlite                                 # 1M items, 10M events, 10M attempts
    .venv/bin/python bench/store.py --db postgresql                             # a scratch database beside
                                                                               # TEST_DATABASE_URL (or --pg-url)
    .venv/bin/python bench/store.py --db sqlite --path /var/tmp/store.db --keep # populate once and keep it
    .venv/bin/python bench/store.py --reuse /var/tmp/store.db                   # time again, without populating
    .venv/bin/python bench/store.py --items 2000 --events 20000 --attempts 20000 --db sqlite   # a quick check

How it runs. A simulated clock starts at the populated data's "now" and moves one dispatch tick
(POLLER_TICK_SECONDS, 5 s) per round. A round is what a tick brings: the tick's claim, as
`dispatch_due` makes it (limit POLLER_DISPATCH_LIMIT, 20,000: at 1M items about 13,000 come due per
tick; its target is issue 3's, 1 s per 10,000 claimed), timed in two parts: a dispatch chunk first
(200, the most overdue), then the rest,
poll the 200 claimed as unchanged (`load_work`, decisions as worker/polling.py makes them,
`apply_outcomes` and commit), claim the due deliveries (limit POLLER_DELIVERY_LIMIT; given back
untimed, so every round claims the same: the newest --due-deliveries of the pending tail, whose
older part waits for retries in hours), the same claim with the whole tail due (as after a
subscriber's outage; rolled back), read `poller status`, the dashboard data, a metrics scrape and
four event pages (limits 100 and 1000, from the start and from the middle of the stream). The items
the tick claimed are then marked polled in one untimed statement, so they come back an interval
later and the number due stays what it would be in steady state. Every other write commits.

What is not like production: nothing else runs (no workers, no API server), so the figures are
the store's own. SQLite is not ANALYZEd (the poller never does); PostgreSQL gets the
VACUUM ANALYZE that autovacuum would give a table loaded this fast. Each run prunes the oldest
day, so a database reused with --reuse has one day less of history per run before it.
"""

from __future__ import annotations

import argparse
import base64
import math
import multiprocessing
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))  # ahead of bench/: ``api`` is the project's package, not bench/api.py

from sqlalchemy import Engine, Text, func, make_url, select, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402
from store_data import Layout  # noqa: E402
from store_paths import (  # noqa: E402
    BACKLOG,
    CLAIM,
    CLAIMS,
    DASHBOARD,
    DEEP,
    DELIVERY,
    FIRST,
    METRICS,
    PATHS,
    POLL,
    STATUS,
    TICK,
    TICK_S,
    Bench,
    Samples,
    SimClock,
    claim_backlog,
    one_round,
)
from store_populate import populate, progress, record_digests  # noqa: E402

from cli.forked import freeze_heap  # noqa: E402
from worker.retention import Cutoffs, Retention  # noqa: E402
from worker.store import crypto  # noqa: E402
from worker.store.db import create_database, drop_database, make_engine, make_sessionmaker, sqlite_url  # noqa: E402
from worker.store.migrate import upgrade  # noqa: E402
from worker.store.models import Event, Heartbeat  # noqa: E402
from worker.store.prune import Pruner  # noqa: E402
from worker.store.sizes import store_size  # noqa: E402

#: The targets of issue 13 (every path, and during a prune), and of issue 3 (the dispatch tick).
TARGET_MS, PRUNE_TARGET_MS, DISPATCH_MS_PER_10K = 50.0, 100.0, 1000.0
#: A fixed Fernet key for the subscriptions' secrets: the database is a scratch one, and a kept one
#: must open again in a later run.
BENCH_KEY = base64.urlsafe_b64encode(b"status-poller bench/store.py key").decode()

# -- reporting ----------------------------------------------------------------------------


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def target_of(path: str, rows: float, limit: float) -> float:
    """The path's target: ``limit`` ms, and for the tick's claim 1 s per 10,000 claimed (issue 3)."""
    if path == CLAIMS:
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


def prune_apart(url: str, cutoffs: Cutoffs, now: datetime) -> dict[str, int]:
    """The prune in a child process, on its own engine (``now`` for the marks it writes)."""
    engine = make_engine(url)
    try:
        return Pruner(make_sessionmaker(engine), clock=lambda: now,
                      reads=make_sessionmaker(engine, read_only=True)).run(cutoffs)
    finally:
        engine.dispose()


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
    migrate_s = None
    if not fresh:  # a database kept by an older checkout: brought to this one's schema, as `poller migrate` does
        started = time.perf_counter()
        upgrade(engine)
        migrate_s = time.perf_counter() - started
    started = time.perf_counter()
    if recorded := record_digests(engine):
        progress(f"snapshot digests recorded for {recorded:,} items ({time.perf_counter() - started:.0f} s)")
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
    how = f"{populate_s:.0f} s" if populate_s is not None else f"(reused; migrated in {migrate_s:.1f} s)"
    print(f"# populate {how}, database "
          f"{size_bytes / 1e9:.2f} GB, event data {float(avg_data or 0):.0f} bytes on average, "
          f"simulated clock from {beat.at:%Y-%m-%d %H:%M:%S} UTC")
    print()

    freeze_heap()  # as `poller api` does once started (cli/serve.py): the process's own objects are never garbage
    # A round every tick, as production has them: back to back, the rounds would write a tick's
    # worth in a third of its time, holding SQLite's one write lock most of the time and leaving
    # PostgreSQL's autovacuum three times the dead rows it has in production.
    pace = threading.Event()

    def paced_round() -> dict[str, tuple[float, int]]:
        started = time.monotonic()
        result = one_round(bench)
        pace.wait(max(0.0, TICK_S - (time.monotonic() - started)))
        return result

    for _ in range(args.warmup):
        paced_round()
    quiet = Samples()
    for _ in range(args.runs):
        quiet.add(paced_round())
    for _ in range(min(args.runs, 5)):  # after the rounds: see claim_backlog
        quiet.add({BACKLOG: claim_backlog(bench, bench.clock())})
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
            if args.prune_in == "thread":
                result["removed"] = Pruner(sessions, clock=bench.clock, reads=bench.reads).run(cutoffs)
            else:  # as beat's daily task runs it: `poller prune` in a process of its own
                with multiprocessing.get_context("spawn").Pool(1) as pool:
                    result["removed"] = pool.apply(prune_apart, (url, cutoffs, bench.clock()))
        except Exception as err:  # noqa: BLE001 - reported below, after the rounds stop
            result["error"] = err
        result["seconds"] = time.perf_counter() - started

    during = Samples()
    thread = threading.Thread(target=prune, name="prune")
    thread.start()
    while thread.is_alive() or not during.ms[CLAIM]:
        during.add(paced_round())
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
    parser.add_argument("--prune-in", choices=["process", "thread"], default="process",
                        help="where the prune runs: a process of its own, as beat's task runs it (default), or a "
                             "thread of the timed process, sharing its GIL, as it ran before")
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
