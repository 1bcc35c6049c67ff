"""Benchmark provider pushes end to end (issue 14): change-to-event latency and provider requests
per change, with real processes.

The poller runs as deployed (`poller run`: worker, beat and the HTTP API on an embedded Redis, on
SQLite by default) against the project's simulator, which pushes as Billit does: `poller providers
webhooks sync billit` registers its Order and Message webhooks at POLLER_PUBLIC_URL (the API), and
the simulator posts each change to both, signed. ``--orders`` orders are tracked with an hourly
interval (the pushes are the main source; the hourly poll is the safety net) and first observed;
then for ``--minutes`` one order at a time moves on, ``--change-rate`` of them a minute (each order
once). Latency is wall time from the simulator's change to the poller's ``status.changed`` event
(its ``created_at``); requests are counted at the simulator during the window.

    .venv/bin/python bench/pushes.py                       # 10,000 orders, 1 % a minute, 3 minutes
    .venv/bin/python bench/pushes.py --db postgresql       # TEST_DATABASE_URL's server, a scratch database
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from endpoint import free_port  # noqa: E402
from poll import poller  # noqa: E402
from sqlalchemy import select  # noqa: E402

from simulator.server import Simulator, SimulatorConfig  # noqa: E402
from worker.store.db import create_database, drop_database, make_engine, sqlite_url  # noqa: E402
from worker.store.models import Event, Item  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def run(args: argparse.Namespace, home: Path) -> dict[str, float]:
    """Start the simulator and `poller run`, register the webhooks, track, change, measure."""
    api_port = free_port()
    db_url = sqlite_url(home / "poller.db")
    if args.db == "postgresql":
        db_url = create_database(args.pg_url, f"poller_bench_{uuid.uuid4().hex[:8]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    # Orders move only when the bench moves them (a stage lasts longer than any run).
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, stage_seconds=1e7)).start() as sim:
        env.update({
            "POLLER_HOME": str(home / "var"), "POLLER_SECRET_KEYS": Fernet.generate_key().decode(),
            "POLLER_DATABASE_URL": db_url, "POLLER_BILLIT__BASE_URL": sim.url,
            "POLLER_BILLIT__API_KEY": "sim-billit-key", "POLLER_BILLIT__PARTY_ID": "1234",
            # The first observation of every order is not what is measured: no rate limit slows it.
            "POLLER_BILLIT__RATE_LIMIT_PER_SECOND": "100000", "POLLER_BILLIT__RATE_LIMIT_BURST": "1000",
            "POLLER_BILLIT__PUSH_RATE_PER_SECOND": "1000", "POLLER_BILLIT__PUSH_BURST": "1000",
            "POLLER_API_PORT": str(api_port), "POLLER_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
            "POLLER_METRICS_PORT": "0", "POLLER_BEAT_METRICS_PORT": "0", "POLLER_LOG_LEVEL": "WARNING",
        })
        orders = [sim.billit.create_order() for _ in range(args.orders)]
        (home / "items.csv").write_text("provider,ref,interval\n" + "".join(f"billit,{o},3600\n" for o in orders))
        cli(env, "migrate")
        cli(env, "track", "--file", str(home / "items.csv"))
        cli(env, "providers", "webhooks", "sync", "billit")
        proc = poller("run", env=env, log=home / "poller.log")
        engine = make_engine(db_url)
        try:
            item_of = wait_observed(engine, args.orders, timeout=args.warmup_timeout)
            changes = random.Random(7).sample(orders, int(args.orders * args.change_rate * args.minutes))
            gap = 60 / (args.orders * args.change_rate)
            changed_at: dict[int, float] = {}
            requests_before = sum(1 for _, label, _ in sim.request_log if label == "billit")
            started = time.time()
            for n, order in enumerate(changes):
                threading.Event().wait(max(0.0, started + n * gap - time.time()))
                changed_at[item_of[str(order)]] = time.time()
                sim.billit.set_stage(order, sim.billit.stage_of(order) + 1)
            seen = wait_events(engine, set(changed_at), timeout=30)
            window = time.time() - started
            requests = sum(1 for _, label, _ in sim.request_log if label == "billit") - requests_before
        finally:
            proc.terminate()
            proc.wait(60)
            engine.dispose()
    if args.db == "postgresql":
        drop_database(args.pg_url, db_url)
    latencies = [min(at) - changed_at[item] for item, at in seen.items()]
    return {"changes": len(changed_at), "events": sum(len(at) for at in seen.values()),
            "missed": len(changed_at) - len(seen), "duplicates": sum(len(at) - 1 for at in seen.values()),
            "pushes": sum(1 for url, _ in sim.pusher.log if "/ingress/billit/" in url),
            "requests_per_minute": requests / window * 60, "requests_per_change": requests / max(len(seen), 1),
            "p50_s": pct(latencies, 0.5), "p99_s": pct(latencies, 0.99), "max_s": max(latencies, default=0.0)}


def wait_observed(engine, n: int, *, timeout: float) -> dict[str, int]:
    """Until every tracked order has had its first poll; ref -> item id."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            observed = conn.scalar(select(Event.position).where(Event.type == "status.observed")
                                   .order_by(Event.position.desc()).limit(1).offset(n - 1))
            if observed is not None:
                return {ref: item_id for item_id, ref in conn.execute(select(Item.id, Item.ref))}
        if time.monotonic() > deadline:
            raise SystemExit(f"the {n} orders were not all observed within {timeout:.0f} s")
        threading.Event().wait(1.0)


def wait_events(engine, items: set[int], *, timeout: float) -> dict[int, list[float]]:
    """The status.changed events of ``items`` (wall times), waiting up to ``timeout`` for all."""
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            seen: dict[int, list[float]] = {}
            for item_id, created in conn.execute(select(Event.item_id, Event.created_at)
                                                 .where(Event.type == "status.changed")):
                seen.setdefault(item_id, []).append(created.replace(tzinfo=UTC).timestamp()
                                                    if created.tzinfo is None else created.timestamp())
        if set(seen) >= items or time.monotonic() > deadline:
            return {i: at for i, at in seen.items() if i in items}
        threading.Event().wait(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--change-rate", type=float, default=0.01, help="share of the orders changing per minute")
    parser.add_argument("--warmup-timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args, Path(tmp))
    print(f"# bench/pushes.py, {datetime.now(UTC):%Y-%m-%d %H:%M}: {args.db}, {args.orders} orders, "
          f"{args.change_rate:.0%} changing a minute, {args.minutes:g} minutes; {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    print("| changes | events | missed | duplicates | pushes | provider requests / min | requests / change "
          "| change-to-event p50 / p99 / max (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {r['changes']} | {r['events']} | {r['missed']} | {r['duplicates']} | {r['pushes']} "
          f"| {r['requests_per_minute']:.0f} | {r['requests_per_change']:.2f} "
          f"| {r['p50_s']:.3f} / {r['p99_s']:.3f} / {r['max_s']:.3f} |")


if __name__ == "__main__":
    main()
