"""Benchmark one dispatch tick (claim + enqueue) with many tracked items and some due.

Runs the real ``tasks.polling.dispatch_due`` body (the function beat triggers) against a real
database and a real Redis broker. For each configuration it loads the items, then times
``--runs`` ticks, re-arming the claimed items between ticks so each tick claims ``--due`` items.

    .venv/bin/python bench/dispatch.py                      # the full matrix (SQLite; PostgreSQL if
                                                           # TEST_DATABASE_URL or --pg-url is set)
    .venv/bin/python bench/dispatch.py --tracked 100000 --due 10000 --db sqlite   # one configuration
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def populate(url: str, tracked: int, due: int, now: datetime) -> None:
    """Insert ``tracked`` items: ``due`` overdue, 10% finished, the rest due within a day."""
    from sqlalchemy import insert, text

    from worker.store.db import make_engine
    from worker.store.migrate import upgrade
    from worker.store.models import Item, Schedule

    engine = make_engine(url)
    upgrade(engine)
    finished = tracked // 10

    def next_poll(i: int) -> datetime | None:
        if i < due:
            return now - timedelta(seconds=1 + i % 300)
        return None if i < due + finished else now + timedelta(seconds=3600 + i % 86400)

    def row(i: int) -> dict[str, object]:
        return {"provider": "billit", "account": "default", "kind": "order", "ref": str(100000 + i),
                "interval_s": 300.0, "state": "active" if next_poll(i) else "terminal",
                "consecutive_failures": 0, "failing": False, "event_seq": 0, "created_at": now,
                "updated_at": now}

    def schedules(conn: Any) -> list[dict[str, object]]:
        ids = conn.execute(text("SELECT id FROM items ORDER BY id")).scalars()
        return [{"item_id": id_, "provider": "billit", "next_poll_at": next_poll(n), "lease_id": 0,
                 "claims_since_poll": 0} for n, id_ in enumerate(ids)]

    if engine.dialect.name == "postgresql":
        # COPY: the fastest way to load a million rows into PostgreSQL.
        cols = list(row(0))
        with engine.begin() as conn:
            cur = conn.connection.driver_connection.cursor()
            with cur.copy(f"COPY items ({', '.join(cols)}) FROM STDIN") as copy:
                for i in range(tracked):
                    r = row(i)
                    copy.write_row([r[c] for c in cols])
            conn.execute(insert(Schedule.__table__), schedules(conn))
            conn.execute(text("ANALYZE items"))
            conn.execute(text("ANALYZE item_schedules"))
    else:
        batch = 50_000
        for start in range(0, tracked, batch):
            with engine.begin() as conn:
                conn.execute(insert(Item.__table__), [row(i) for i in range(start, min(tracked, start + batch))])
        with engine.begin() as conn:
            conn.execute(insert(Schedule.__table__), schedules(conn))
            conn.execute(text("ANALYZE"))
    engine.dispose()


def run_one(args: argparse.Namespace) -> dict[str, object]:
    """Load, then time ticks. Runs in its own process: settings are read at import."""
    import redis
    from sqlalchemy import text

    now = datetime.now(UTC)
    t0 = time.perf_counter()
    populate(args.url, args.tracked, args.due, now)
    load_s = time.perf_counter() - t0

    from tasks import poller_service
    from tasks.polling import dispatch_due
    from worker.store.db import make_engine

    broker = redis.Redis.from_url(os.environ["POLLER_BROKER_URL"])
    engine = make_engine(args.url)
    times, claimed = [], []
    for _ in range(args.runs):
        broker.flushdb()
        start = time.perf_counter()
        claimed.append(dispatch_due())
        times.append(time.perf_counter() - start)
        queued = broker.llen("celery")
        # Re-arm: make the just-claimed items due again for the next run.
        with engine.begin() as conn:
            conn.execute(text("UPDATE item_schedules SET next_poll_at = :t WHERE lease_id > 0 AND next_poll_at > :n"),
                         {"t": now - timedelta(seconds=5), "n": now + timedelta(seconds=60)})
    poller_service().sessions.kw["bind"].dispose()
    engine.dispose()
    return {"db": args.db, "tracked": args.tracked, "due": args.due, "claimed": claimed[-1],
            "messages": queued, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "load_s": round(load_s, 1)}


def configuration(db: str, tracked: int, due: int, runs: int, pg_url: str | None, broker: str,
                  workdir: Path) -> dict[str, object]:
    """Run one configuration in a child process with its own database."""
    from worker.store.db import create_database, drop_database

    drop = None
    if db == "sqlite":
        url = f"sqlite+pysqlite:///{workdir / f'bench_{tracked}.db'}"
    else:
        assert pg_url
        url = create_database(pg_url, f"poller_bench_{uuid.uuid4().hex[:8]}")

        def drop() -> None:
            drop_database(pg_url, url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({"POLLER_DATABASE_URL": url, "POLLER_BROKER_URL": broker, "POLLER_HOME": str(workdir),
                "POLLER_DISPATCH_LIMIT": str(max(due, 20_000)), "POLLER_LOG_LEVEL": "WARNING",
                # A shared database needs a given key (secrets at rest); the bench stores no secret.
                "POLLER_SECRET_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode()})
    try:
        out = subprocess.run([sys.executable, __file__, "--child", "--db", db, "--url", url,
                              "--tracked", str(tracked), "--due", str(due), "--runs", str(runs)],
                             env=env, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as err:
        sys.stderr.write(err.stderr)
        raise
    finally:
        if drop:
            drop()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--tracked", type=int, action="append")
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg-url", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.db = args.db[0]
        args.tracked = args.tracked[0]
        print(json.dumps(run_one(args)))
        return

    from cli.embedded import EmbeddedRedis

    dbs = args.db or (["sqlite", "postgresql"] if args.pg_url else ["sqlite"])
    sizes = args.tracked or [100_000, 1_000_000]
    print(f"# dispatch tick benchmark: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.runs} ticks each, median\n")
    print("| database | tracked | due | claimed | messages | tick median | min | max | per 10k due |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis_server:
        for db in dbs:
            for tracked in sizes:
                r = configuration(db, tracked, args.due, args.runs, args.pg_url, redis_server.url, Path(tmp))
                per10k = float(r["median_s"]) * 10_000 / args.due
                print(f"| {db} | {tracked:,} | {args.due:,} | {r['claimed']:,} | {r['messages']} | "
                      f"{float(r['median_s']):.3f} s | {float(r['min_s']):.3f} s | {float(r['max_s']):.3f} s | "
                      f"{per10k:.3f} s |", flush=True)


if __name__ == "__main__":
    main()
