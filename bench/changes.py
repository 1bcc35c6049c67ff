"""Benchmark how changes are found (issue 14): provider requests per detected change and
change-to-event latency, per-item polling against incremental sweeps.

In one process, in simulated time: the project's simulator (its clock stepped, never running on
its own), ``--orders`` tracked Billit orders, of which ``--change-rate`` per minute move on one
stage (each order at most once, so every change must become exactly one event), for
``--minutes``; then a drain until every change is seen. Each simulated second the dispatch claims
and polls what is due (the poller's own service, over real HTTP to the simulator), and in the
sweep mode the sweeper runs every ``--sweep-seconds``.

- ``poll``: every order on ``--interval`` (default 300 s), no sweep.
- ``sweep``: sweeps every ``--sweep-seconds`` (default 10 s); each order's own interval is
  ``--interval`` as in ``poll``, and the account's reconciliation interval
  (POLLER_BILLIT__RECONCILE_SECONDS, worker.reconcile) ``--reconcile`` (default 3,600 s): while
  the sweeps are healthy, each order is polled that often.

Latency is measured in simulated time at one-second steps (the dispatch tick here), so it says
how long a change waits for its poll, not how fast the machine is.

    .venv/bin/python bench/changes.py [--orders 10000] [--minutes 10] [--change-rate 0.01]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, update  # noqa: E402

from config.logging import configure_logging  # noqa: E402
from simulator.server import Simulator, SimulatorConfig  # noqa: E402
from worker.catalog import Catalog, ItemSpec  # noqa: E402
from worker.policy import PollPolicy  # noqa: E402
from worker.providers.base import HttpOptions, ProviderContext  # noqa: E402
from worker.providers.billit import BillitSettings  # noqa: E402
from worker.providers.registry import ProviderSet  # noqa: E402
from worker.reconcile import Reconciler  # noqa: E402
from worker.service import PollerService  # noqa: E402
from worker.store.db import make_engine, make_sessionmaker, sqlite_url  # noqa: E402
from worker.store.migrate import upgrade  # noqa: E402
from worker.store.models import Event, Item, Schedule  # noqa: E402
from worker.sweeps import Sweeper  # noqa: E402


class Clock:
    """Our clock, stepped with the simulator's."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def run(mode: str, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(7)
    # Orders move only when the bench moves them: a stage lasts longer than any run.
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, stage_seconds=1e7)).start() as sim, \
            tempfile.TemporaryDirectory() as tmp:
        clock = Clock(sim.clock.wall().replace(tzinfo=UTC))
        engine = make_engine(sqlite_url(Path(tmp) / "bench.db"))
        upgrade(engine)
        sessions = make_sessionmaker(engine)
        settings = BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234",
                                  rate_limit_per_second=None)
        providers = ProviderSet({"billit": settings}, ProviderContext(http=HttpOptions(timeout_s=5), clock=clock))
        reconciler = Reconciler(sessions, {("billit", "default"): (args.sweep_seconds, args.reconcile)}, clock=clock,
                                monotonic=lambda: clock().timestamp()) if mode == "sweep" else None
        poller = PollerService(sessions, providers, PollPolicy(), clock=clock, rng=random.Random(1), threads=8,
                               reconciler=reconciler)
        orders = [sim.billit.create_order() for _ in range(args.orders)]
        catalog = Catalog(sessions, providers, default_interval_s=args.interval, clock=clock)
        made = catalog.upsert_many([ItemSpec("billit", str(o), interval_s=args.interval) for o in orders])
        # How far apart each order's polls are in steady state.
        interval = args.interval if mode == "poll" else args.reconcile
        item_of = {o: m[0] for o, m in zip(orders, made, strict=True)}  # type: ignore[index]
        # As the daemon wires it: listed orders stored from the list where it may be believed.
        sweeper = Sweeper(sessions, providers, {("billit", "default"): args.sweep_seconds}, clock=clock,
                          store=poller.store_listed) if mode == "sweep" else None

        def dispatch() -> None:
            poller.dispatch_due(poller.poll_claims, lease_s=30, limit=args.orders, chunk_size=200)

        dispatch()  # every order observed
        if sweeper is not None:
            sweeper.run_due()  # the first sweep reads back a day: every order once more
            dispatch()
        # A fleet's polls are spread over their interval, not all due at once: steady state.
        with sessions.begin() as s:
            for item_id in item_of.values():
                s.execute(update(Schedule).where(Schedule.item_id == item_id).values(
                    next_poll_at=clock() + timedelta(seconds=rng.uniform(0, interval))))
        last_event = 0
        with sessions.begin() as s:
            last_event = s.scalar(select(Event.position).order_by(Event.position.desc()).limit(1)) or 0

        changed_at: dict[int, datetime] = {}
        seen: dict[int, list[float]] = {}
        candidates = list(orders)
        rng.shuffle(candidates)
        per_second = args.orders * args.change_rate / 60
        owed = 0.0
        requests_before = len(sim.request_log)
        window_s = int(args.minutes * 60)
        drain_s = int(interval) + 120 if mode == "poll" else args.sweep_seconds * 3 + 60
        for second in range(window_s + drain_s):
            if second < window_s:
                owed += per_second
                while owed >= 1 and candidates:
                    owed -= 1
                    order = candidates.pop()
                    sim.billit.set_stage(order, sim.billit.stage_of(order) + 1)
                    changed_at[item_of[order]] = clock()
            if second == window_s:
                window_requests = len(sim.request_log) - requests_before
            sim.clock.advance(1)
            clock.now += timedelta(seconds=1)
            if sweeper is not None:
                sweeper.run_due()
            dispatch()
            with sessions.begin() as s:
                for position, item_id, created in s.execute(
                        select(Event.position, Event.item_id, Event.created_at)
                        .where(Event.position > last_event, Event.type == "status.changed")
                        .order_by(Event.position)):
                    last_event = position
                    if item_id in changed_at:
                        seen.setdefault(item_id, []).append((created - changed_at[item_id]).total_seconds())
            if second >= window_s and len(seen) == len(changed_at):
                break
        for item_id in sorted(set(changed_at) - set(seen)):
            order = next(o for o, i in item_of.items() if i == item_id)
            with sessions.begin() as s:
                it = s.get(Item, item_id)
                print(f"# missed: item {item_id} order {order} changed at {changed_at[item_id]} "
                      f"LastModified {sim.billit.order_body(order)['LastModified']} state {it.state} "
                      f"next_poll_at {it.next_poll_at} last_polled {it.last_polled_at} lease {it.lease_id}",
                      file=sys.stderr)
        latencies = [v[0] for v in seen.values()]
        changes = len(changed_at)
        engine.dispose()
        per_minute = window_requests / args.minutes
        return {"requests_per_minute": per_minute,
                "requests_per_change": per_minute / (changes / args.minutes),
                "changes": changes, "missed": changes - len(seen),
                "duplicates": sum(len(v) - 1 for v in seen.values()),
                "p50_s": pct(latencies, 0.5), "p99_s": pct(latencies, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--change-rate", type=float, default=0.01, help="share of the orders changing per minute")
    parser.add_argument("--interval", type=float, default=300)
    parser.add_argument("--reconcile", type=float, default=3600)
    parser.add_argument("--sweep-seconds", type=float, default=10)
    parser.add_argument("--modes", default="poll,sweep")
    args = parser.parse_args()
    configure_logging("console", "WARNING")
    print(f"# {platform.machine()}, Python {platform.python_version()}, {args.orders} orders, "
          f"{args.change_rate:.0%} changing a minute, {args.minutes:g} simulated minutes")
    print("| mode | provider requests / min | requests / detected change | changes | missed | duplicates "
          "| change-to-event p50 / p99 (s, simulated) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in args.modes.split(","):
        r = run(mode, args)
        label = (f"poll every {args.interval:g} s" if mode == "poll"
                 else f"sweep every {args.sweep_seconds:g} s, RECONCILE_SECONDS {args.reconcile:g} "
                      f"(orders' own interval {args.interval:g} s)")
        print(f"| {label} | {r['requests_per_minute']:,.0f} | {r['requests_per_change']:.2f} | {r['changes']} "
              f"| {r['missed']} | {r['duplicates']} | {r['p50_s']:.0f} / {r['p99_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
