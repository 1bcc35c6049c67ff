"""Benchmark webhook delivery with real processes.

1. Throughput: N events (across many items) are queued for one subscription; a real Celery worker
   delivers them to a local receiver that answers at once. Rate = N / (last arrival - first arrival).
2. Latency: orders tracked by `poller run` (worker + beat) against the simulator change stage; the
   time from the change in the simulator to the webhook's arrival, per event (p50, p99).

    .venv/bin/python bench/deliver.py [--events 20000] [--concurrency 4] [--orders 50] [--tick 1]
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: The key of the secrets this process stores (a Fernet key); the poller processes get it too.
SECRET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def arrivals(path: Path) -> list[tuple[str, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((parts[0], float(parts[1])))
    return out


def wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def base_env(tmp: Path, db_url: str, broker: str, tick: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({"POLLER_HOME": str(tmp), "POLLER_DATABASE_URL": db_url, "POLLER_BROKER_URL": broker,
                "POLLER_TICK_SECONDS": str(tick), "POLLER_LOG_LEVEL": "WARNING", "POLLER_LOG_FORMAT": "json",
                "POLLER_WEBHOOK_ALLOW_HTTP": "true", "POLLER_WEBHOOK_ALLOW_PRIVATE": "true",
                "POLLER_SECRET_KEYS": SECRET_KEY})
    return env


def throughput(tmp: Path, db_url: str, broker: str, receiver_url: str, log: Path, events: int,
               concurrency: int) -> dict[str, float]:
    from sqlalchemy import insert

    from worker.ids import event_ids
    from worker.store.db import make_engine, make_sessionmaker
    from worker.store.migrate import upgrade
    from worker.store.models import Delivery, Event
    from worker.subscriptions import Subscriptions

    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    Subscriptions(sessions, allow_http=True, allow_private=True, known_providers=("billit",)).add(receiver_url)
    now = datetime.now(UTC)
    items = max(1, events // 10)
    ids = event_ids(now, os.urandom(10), events)
    data = {"item_id": 0, "provider": "billit", "account": "default", "kind": "order", "ref": "1",
            "status": "delivered", "previous_status": "pending_delivery", "terminal": False,
            "changes": [{"path": "delivery.status", "from": "Pending", "to": "Delivered"}],
            "snapshot": {"order_status": "ToPay"}, "error": None, "consecutive_failures": 0}
    with engine.begin() as conn:
        conn.execute(insert(Event), [{"id": ids[n], "item_id": 1 + n % items, "seq": 1 + n // items,
                                      "type": "status.changed", "data": {**data, "item_id": 1 + n % items},
                                      "created_at": now} for n in range(events)])
        conn.execute(insert(Delivery), [{"subscription_id": 1, "event_position": n + 1, "item_id": 1 + n % items,
                                         "state": "pending", "attempts": 0, "next_attempt_at": now, "lease_id": 0,
                                         "created_at": now, "updated_at": now} for n in range(events)])
    engine.dispose()
    env = base_env(tmp, db_url, broker, 0.5)
    env["POLLER_DELIVERY_CHUNK"] = "200"
    worker = spawn([sys.executable, "-m", "cli.main", "worker", "--concurrency", str(concurrency)], env,
                   tmp / "worker.log")
    beat = spawn([sys.executable, "-m", "cli.main", "beat"], env, tmp / "beat.log")
    try:
        wait(lambda: len(arrivals(log)) >= events, 600, f"{events} deliveries")
    finally:
        stop(beat)
        stop(worker)
    times = sorted(t for _, t in arrivals(log))
    span = times[-1] - times[0]
    return {"events": events, "seconds": span, "rate": (events - 1) / span if span else float("inf")}


def latency(tmp: Path, db_url: str, broker: str, receiver_url: str, log: Path, orders: int, tick: float
            ) -> dict[str, float]:
    from simulator.server import Simulator, SimulatorConfig
    from worker.policy import PollPolicy
    from worker.providers.registry import ProviderSet
    from worker.service import PollerService
    from worker.store.db import make_engine, make_sessionmaker
    from worker.store.migrate import upgrade
    from worker.subscriptions import Subscriptions

    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    Subscriptions(sessions, allow_http=True, allow_private=True, known_providers=("billit",)).add(receiver_url)
    service = PollerService(sessions, ProviderSet({}), PollPolicy())
    results: list[float] = []
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0)).start() as sim:
        env = base_env(tmp, db_url, broker, tick)
        env.update({"POLLER_BILLIT__BASE_URL": sim.url, "POLLER_BILLIT__API_KEY": "sim-billit-key",
                    "POLLER_BILLIT__PARTY_ID": "1234", "POLLER_BILLIT__RATE_LIMIT_PER_SECOND": "10000",
                    "POLLER_BILLIT__RATE_LIMIT_BURST": "10000", "POLLER_JITTER_RATIO": "0"})
        for n in range(orders):
            sim.billit.create_order(5001 + n)
            # Polled faster than the tick, so a change is seen by the next dispatch tick.
            service.track("billit", str(5001 + n), interval_s=tick / 2)
        worker = spawn([sys.executable, "-m", "cli.main", "worker", "--concurrency", "4"], env, tmp / "lw.log")
        beat = spawn([sys.executable, "-m", "cli.main", "beat"], env, tmp / "lb.log")
        try:
            wait(lambda: len(arrivals(log)) >= orders, 120, "first observations")
            for stage in range(1, 5):
                seen = len(arrivals(log))
                time.sleep(random.uniform(0, tick))  # change at a random phase of the tick
                changed_at = time.time()
                sim.clock.advance(10)
                wait(lambda s=seen: len(arrivals(log)) >= s + orders, 60, f"stage {stage}")
                results.extend(t - changed_at for _, t in arrivals(log)[seen:seen + orders])
        finally:
            stop(beat)
            stop(worker)
    engine.dispose()
    results.sort()
    return {"n": len(results), "p50": statistics.median(results),
            "p99": results[min(len(results) - 1, int(len(results) * 0.99))], "max": results[-1]}


def fresh_pg_database(admin_url: str) -> str:
    """An empty PostgreSQL database beside ``admin_url``'s, for one phase."""
    import uuid

    from worker.store.db import create_database

    return create_database(admin_url, f"poller_bench_{uuid.uuid4().hex[:8]}")


def drop_pg_database(admin_url: str, url: str) -> None:
    from worker.store.db import drop_database

    drop_database(admin_url, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--db", default="sqlite", help="sqlite, or a PostgreSQL URL")
    args = parser.parse_args()

    from cli.embedded import EmbeddedRedis, free_port
    from worker.store import crypto
    from worker.store.db import sqlite_url

    crypto.install(crypto.Keyring([SECRET_KEY]))

    print(f"# delivery benchmark: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmpdir, EmbeddedRedis(Path(tmpdir) / "redis") as redis_server:
        tmp = Path(tmpdir)
        for phase in ("throughput", "latency"):
            port, log = free_port(), tmp / f"{phase}-arrivals.log"
            receiver = subprocess.Popen([sys.executable, str(ROOT / "bench" / "receiver.py"), str(port), str(log)],
                                        stdout=subprocess.PIPE)
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == b"ready"
            db_url = sqlite_url(tmp / f"{phase}.db") if args.db == "sqlite" else fresh_pg_database(args.db)
            try:
                if phase == "throughput":
                    r = throughput(tmp, db_url, redis_server.url, f"http://127.0.0.1:{port}/hook", log,
                                   args.events, args.concurrency)
                    print(f"throughput: {r['events']} deliveries in {r['seconds']:.2f} s = "
                          f"{r['rate']:.0f} deliveries/s (worker concurrency {args.concurrency})", flush=True)
                else:
                    r = latency(tmp, db_url, redis_server.url, f"http://127.0.0.1:{port}/hook", log,
                                args.orders, args.tick)
                    print(f"change-to-delivery: n={r['n']} p50 {r['p50'] * 1000:.0f} ms, p99 {r['p99'] * 1000:.0f} ms, "
                          f"max {r['max'] * 1000:.0f} ms (tick {args.tick:g} s; target p99 <= tick + 1 s)", flush=True)
            finally:
                receiver.terminate()
                receiver.wait(10)
                receiver.stdout.close()
                if args.db != "sqlite":
                    drop_pg_database(args.db, db_url)


if __name__ == "__main__":
    main()
