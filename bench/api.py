"""Benchmark the HTTP API with real processes: uvicorn serving `build_api` in its own process, and
this process as the client over loopback HTTP.

1. Batch create: `POST /v1/items/batch` with 10,000 new Billit items (fresh database each run),
   the same batch again (10,000 updates: a new interval), and 10,000 new items with labels and
   an external id. Wall time from request to response; median of ``--runs``.
2. Events paging: ``--events`` events inserted in bulk, then paged with ``limit=1000`` from the
   start to the end: events/s, and the latency of the first page and of the last full page.
3. Polling under API load (SQLite): `poller worker` + `poller beat` (tick 1 s, Redis broker) poll
   ``--orders`` Billit orders on a 1 s interval against `poller simulate --speed 0` (unchanged
   polls). Polls/s is counted at the simulator, in three windows: no API requests, 50 requests/s
   (GET /v1/items?limit=100, /v1/events?limit=100, /v1/items/{id} in turn), no requests again.

    .venv/bin/python bench/api.py [--runs 3] [--events 100000] [--orders 2000] [--duration 30] [--database-url PG]
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
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.deliver import spawn, stop, wait  # noqa: E402  (the same process handling as the delivery bench)

#: The key of the secrets stored in the database (a Fernet key); every child process gets it.
SECRET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
BATCH = 10_000
#: First Billit OrderID `poller simulate` hands out.
FIRST_ORDER = 1001


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.ConnectionError:
        return False


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))]


def env_for(tmp: Path, db_url: str, **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("POLLER_")},
            "POLLER_HOME": str(tmp), "POLLER_DATABASE_URL": db_url, "POLLER_SECRET_KEYS": SECRET_KEY,
            "POLLER_LOG_LEVEL": "WARNING", "POLLER_LOG_FORMAT": "json",
            # Other processes on this machine may hold the default /metrics ports.
            "POLLER_METRICS_PORT": "0", "POLLER_BEAT_METRICS_PORT": "0",
            "POLLER_BILLIT__BASE_URL": "http://127.0.0.1:9", "POLLER_BILLIT__API_KEY": "sim-billit-key",
            "POLLER_BILLIT__PARTY_ID": "1234", **extra}


def serve(port: int) -> None:
    """Child mode: serve the API (settings from the environment) on loopback ``port``, as `poller api` does."""
    import uvicorn

    from cli.serve import listen
    from config.settings import get_settings
    from config.wiring import build_api

    app = build_api(get_settings())
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=[listen("127.0.0.1", port)])


@contextmanager
def api_server(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The API in its own process (its own GIL); yields its URL and process."""
    from cli.embedded import free_port

    port = free_port()
    proc, url = spawn([sys.executable, __file__, "--serve", str(port)], env, log), f"http://127.0.0.1:{port}"
    try:
        wait(lambda: answers(url + "/healthz"), 30, "the API to answer /healthz")
        yield url, proc
    finally:
        stop(proc)


@contextmanager
def database(admin_url: str | None, tmp: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file, or a new PostgreSQL database beside ``admin_url``."""
    from worker.store.db import create_database, drop_database, make_engine, sqlite_url
    from worker.store.migrate import upgrade

    url = create_database(admin_url, f"poller_bench_{uuid.uuid4().hex[:8]}") if admin_url else \
        sqlite_url(tmp / f"api_{uuid.uuid4().hex[:8]}.db")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        if admin_url:
            drop_database(admin_url, url)


def new_key(db_url: str) -> str:
    """A read-write API key, made through the service layer as `poller keys create` does."""
    from worker.apikeys import ApiKeys
    from worker.store.db import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    try:
        return ApiKeys(make_sessionmaker(engine)).create("bench")[1]
    finally:
        engine.dispose()


def post(url: str, key: str, body: bytes) -> tuple[float, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    start = time.perf_counter()
    resp = requests.post(url + "/v1/items/batch", data=body, headers=headers, timeout=300)
    elapsed = time.perf_counter() - start
    if resp.status_code != 200:
        raise SystemExit(f"batch: HTTP {resp.status_code}: {resp.text[:500]}")
    return elapsed, resp.json()


def batch_bench(admin_url: str | None, tmp: Path, runs: int) -> dict[str, list[float]]:
    """Times of a 10,000-item batch: create, the same again (updates), create with labels."""
    def items(interval: float, labels: bool) -> bytes:
        return json.dumps({"items": [
            {"provider": "billit", "ref": str(100_000 + n), "interval_seconds": interval,
             **({"labels": {"customer": f"c{n % 50}", "region": "eu", "batch": "b1"},
                 "external_id": f"inv-{n}"} if labels else {})} for n in range(BATCH)]}).encode()

    plain, again, labelled = items(60, False), items(120, False), items(60, True)
    times: dict[str, list[float]] = {"create": [], "update": [], "create+labels": []}
    for run in range(runs):
        for bodies in ([("create", plain, BATCH), ("update", again, 0)], [("create+labels", labelled, BATCH)]):
            with database(admin_url, tmp) as url:
                key = new_key(url)
                with api_server(env_for(tmp, url), tmp / "api-batch.log") as (api, _):
                    for label, body, created in bodies:
                        elapsed, out = post(api, key, body)
                        if out["created"] != created or out["refused"]:
                            raise SystemExit(f"batch {label}: unexpected result {dict(out, results='...')}")
                        times[label].append(elapsed)
                        print(f"  run {run + 1} {label}: {elapsed:.2f} s", flush=True)
    return times


def insert_events(url: str, count: int) -> None:
    """``count`` events of 1,000 items, written in bulk as the poller would have (ids in order)."""
    from sqlalchemy import insert

    from worker.ids import event_ids
    from worker.store.db import make_engine
    from worker.store.models import Event

    # Older than the feed's 10 s hole grace, as a backlog being read is.
    at = datetime.now(UTC) - timedelta(days=1)
    ids = event_ids(at, os.urandom(10), count)
    data = {"provider": "billit", "account": "default", "kind": "order", "status": "delivered",
            "previous_status": "pending_delivery", "terminal": False,
            "changes": [{"path": "delivery.status", "from": "Pending", "to": "Delivered"}],
            "snapshot": {"order_status": "ToPay", "delivery": {"status": "delivered"}}, "error": None,
            "consecutive_failures": 0, "labels": {"customer": "acme", "region": "eu"}}
    engine = make_engine(url)
    with engine.begin() as conn:
        for start in range(0, count, 10_000):
            conn.execute(insert(Event), [
                {"id": ids[n], "item_id": 1 + n % 1000, "seq": 1 + n // 1000, "type": "status.changed",
                 "data": {**data, "item_id": 1 + n % 1000, "ref": str(100_000 + n % 1000),
                          "external_id": f"inv-{n % 1000}"}, "created_at": at}
                for n in range(start, min(count, start + 10_000))])
    engine.dispose()


def events_bench(admin_url: str | None, tmp: Path, count: int) -> dict[str, float]:
    """Page through ``count`` stored events with limit=1000; first and deep page latency."""
    with database(admin_url, tmp) as url:
        insert_events(url, count)
        key = new_key(url)
        with api_server(env_for(tmp, url), tmp / "api-events.log") as (api, _):
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {key}"

            def page(after: str) -> tuple[float, dict[str, Any]]:
                start = time.perf_counter()
                resp = session.get(f"{api}/v1/events?limit=1000&after={after}", timeout=60)
                elapsed = time.perf_counter() - start
                resp.raise_for_status()
                return elapsed, resp.json()

            page("")  # warm the connection and the server's caches once
            seen, after, deep, pages = 0, "", "", []
            start = time.perf_counter()
            while True:
                elapsed, body = page(after)
                pages.append(elapsed)
                seen += len(body["data"])
                # The last full page is as deep in the stream as it gets.
                deep, after = after, body["next_cursor"]
                if not body["has_more"]:
                    break
            total = time.perf_counter() - start
            if seen != count:
                raise SystemExit(f"events: paged {seen} events, stored {count}")
            first_ms = statistics.median(page("")[0] for _ in range(5)) * 1000
            deep_ms = statistics.median(page(deep)[0] for _ in range(5)) * 1000
    return {"events": count, "seconds": total, "rate": count / total, "pages": len(pages),
            "first_ms": first_ms, "deep_ms": deep_ms, "page_p50_ms": statistics.median(pages) * 1000,
            "page_max_ms": max(pages) * 1000}


def machine_busy() -> float:
    """CPU seconds the machine has spent busy (all cores), from /proc/stat: user, nice, system, irq and
    softirq (loopback traffic is softirq, charged to the processes by their own counters)."""
    user, nice, system, _idle, _iowait, irq, softirq = map(int, Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes and all their descendants (Celery's pool), from /proc."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    wanted, grew = set(pids), True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in wanted} - wanted
        wanted |= more
        grew = bool(more)
    return sum(stats[pid][1] for pid in wanted if pid in stats)


#: The routes of the API load, requested in turn (``{n}``: an item id).
ROUTES = {"items": "/v1/items?limit=100", "events": "/v1/events?limit=100", "item": "/v1/items/{n}"}


def api_load(api: str, key: str, items: int, rate: float, stop: threading.Event,
             out: dict[str, list[Any]]) -> None:
    """``rate`` requests/s to ROUTES in turn, open loop (a slow answer does not delay the next),
    until ``stop``; each latency into ``out[route]``, each failure into ``out["failed"]``."""
    local = threading.local()

    def one(n: int) -> None:
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.headers["Authorization"] = f"Bearer {key}"
        route = list(ROUTES)[n % len(ROUTES)]
        path = ROUTES[route].format(n=1 + n * 7919 % items)
        start = time.perf_counter()
        try:
            status = str(local.s.get(api + path, timeout=30).status_code)
        except requests.RequestException as err:
            status = type(err).__name__
        out[route].append(time.perf_counter() - start)
        if status != "200":
            out["failed"].append(f"{path}: {status}")

    with ThreadPoolExecutor(16) as pool:
        start, sent = time.perf_counter(), 0
        while not stop.is_set():
            pool.submit(one, sent)
            sent += 1
            stop.wait(max(0.0, start + sent / rate - time.perf_counter()))  # pacing, not synchronization


def polling_bench(tmp: Path, orders: int, duration: float, rate: float) -> dict[str, Any]:
    """Polls/s of a real worker + beat, without and with API load (SQLite)."""
    from cli.embedded import EmbeddedRedis, free_port

    sim_url = f"http://127.0.0.1:{(sim_port := free_port())}"
    sim = spawn([sys.executable, "-m", "cli.main", "simulate", "--port", str(sim_port), "--speed", "0",
                 "--orders", str(orders)], env_for(tmp, "sqlite://"), tmp / "sim.log")
    procs, out = [sim], {}

    def polls() -> int:
        stats = requests.get(sim_url + "/_sim/stats", timeout=10).json()
        return int(stats["requests"].get("billit", {}).get("total", 0))
    try:
        wait(lambda: answers(sim_url + "/_sim/health"), 30, "the simulator")
        with EmbeddedRedis(tmp / "redis") as redis_server, database(None, tmp) as url:
            key = new_key(url)
            env = env_for(tmp, url, POLLER_BROKER_URL=redis_server.url, POLLER_TICK_SECONDS="1",
                          POLLER_BILLIT__BASE_URL=sim_url, POLLER_BILLIT__RATE_LIMIT_PER_SECOND="100000",
                          POLLER_BILLIT__RATE_LIMIT_BURST="100000")
            with api_server(env, tmp / "api-poll.log") as (api, api_proc):
                body = json.dumps({"items": [{"provider": "billit", "ref": str(FIRST_ORDER + n), "interval_seconds": 1}
                                             for n in range(orders)]}).encode()
                post(api, key, body)
                procs += [spawn([sys.executable, "-m", "cli.main", role], env, tmp / f"{role}.log")
                          for role in ("beat", "worker")]
                assert redis_server.proc is not None
                poller, api_ps = [procs[1].pid, procs[2].pid, redis_server.proc.pid], [api_proc.pid]
                ours = poller + api_ps + [sim.pid, os.getpid()]
                wait(lambda: polls() >= orders, 120, "every order polled once")
                time.sleep(5)  # warm-up: let the schedule spread out before measuring

                def at() -> tuple[float, ...]:
                    # Also what else ran on the machine meanwhile: other users' work skews the figures.
                    return (polls(), cpu_seconds(poller), cpu_seconds(api_ps), machine_busy() - cpu_seconds(ours),
                            sum(os.times()[:2]), time.perf_counter())

                for name, r in (("idle", 0.0), ("loaded", rate), ("idle2", 0.0)):
                    load: dict[str, list[Any]] = {route: [] for route in [*ROUTES, "failed"]}
                    stop_load = threading.Event()
                    with ThreadPoolExecutor(1) as client:
                        running = client.submit(api_load, api, key, orders, r, stop_load, load) if r else None
                        c0, p0, a0, o0, l0, t0 = at()
                        time.sleep(duration)  # the measurement window
                        c1, p1, a1, o1, l1, t1 = at()
                        stop_load.set()
                    if running:
                        running.result()
                    done = [t for route in ROUTES for t in load[route]] or [0.0]
                    out[name] = w = {
                        "rate": (c1 - c0) / (t1 - t0), "cpu_ms_per_poll": (p1 - p0) * 1000 / max(1, c1 - c0),
                        "api_cpu": (a1 - a0) / (t1 - t0), "other_cpu": (o1 - o0) / (t1 - t0),
                        "client_cpu": (l1 - l0) / (t1 - t0),
                        "requests": len(done), "errors": len(load["failed"]), "req_rate": len(done) / (t1 - t0),
                        "p50_ms": pct(done, 0.5) * 1000, "p99_ms": pct(done, 0.99) * 1000}
                    print(f"  {r:g} API requests/s: {w['rate']:.0f} polls/s; others used {w['other_cpu']:.0%} of a core"
                          + "".join(f"; {k} p50/p99 {pct(load[k], 0.5) * 1000:.0f}/{pct(load[k], 0.99) * 1000:.0f} ms"
                                    for k in ROUTES if load[k]), flush=True)
    finally:
        for p in reversed(procs):
            stop(p)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="batch runs (median)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per polling window")
    parser.add_argument("--rate", type=float, default=50.0, help="API requests/s under load")
    parser.add_argument("--database-url", help="a PostgreSQL URL: also run 1 and 2 there (fresh databases)")
    parser.add_argument("--skip", action="append", default=[], choices=["batch", "events", "polling"])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)

    from worker.store import crypto

    crypto.install(crypto.Keyring([SECRET_KEY]))
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"# HTTP API benchmark: {platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, "
          f"Python {platform.python_version()}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for db, admin in [("SQLite", None)] + ([("PostgreSQL", args.database_url)] if args.database_url else []):
            if "batch" not in args.skip:
                print(f"{db}: batch of {BATCH:,}", flush=True)
                for label, times in batch_bench(admin, tmp, args.runs).items():
                    rows.append(f"| {db} | batch {BATCH:,}, {label} | {statistics.median(times):.2f} s "
                                f"(runs: {', '.join(f'{t:.2f}' for t in times)}) |")
            if "events" not in args.skip:
                print(f"{db}: paging {args.events:,} events", flush=True)
                e = events_bench(admin, tmp, args.events)
                rows.append(f"| {db} | page {e['events']:,} events, limit 1000 | {e['seconds']:.2f} s = "
                            f"{e['rate']:,.0f} events/s ({e['pages']} pages, p50 {e['page_p50_ms']:.0f} ms, "
                            f"max {e['page_max_ms']:.0f} ms) |")
                rows.append(f"| {db} | first page / deep page (limit 1000, median of 5) | "
                            f"{e['first_ms']:.0f} ms / {e['deep_ms']:.0f} ms |")
        if "polling" not in args.skip:
            print(f"SQLite: polling {args.orders:,} orders, {args.duration:g} s windows", flush=True)
            r = polling_bench(tmp, args.orders, args.duration, args.rate)
            i, load, i2 = r["idle"], r["loaded"], r["idle2"]
            rows.append(f"| SQLite | polls/s, no API requests (before / after) | {i['rate']:.0f} / {i2['rate']:.0f} "
                        f"({i['cpu_ms_per_poll']:.1f} / {i2['cpu_ms_per_poll']:.1f} ms CPU per poll) |")
            ratio = load["rate"] / ((i["rate"] + i2["rate"]) / 2)
            rows.append(f"| SQLite | polls/s with {load['req_rate']:.0f} API requests/s | {load['rate']:.0f} "
                        f"({ratio:.0%} of the unloaded mean; {load['cpu_ms_per_poll']:.1f} ms CPU per poll) |")
            rows.append(f"| SQLite | API latency under that load (n={load['requests']}, errors {load['errors']}) | "
                        f"p50 {load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms; API process "
                        f"{load['api_cpu']:.0%} of a core, client {load['client_cpu']:.0%} |")
    print(f"\n(load average after: {os.getloadavg()[0]:.2f})\n| database | measurement | result |\n|---|---|---|\n"
          + "\n".join(rows))


if __name__ == "__main__":
    main()
