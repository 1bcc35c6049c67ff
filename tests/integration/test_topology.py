"""The production topology as plain processes: PostgreSQL, Redis, beat and two workers polling a
few hundred items; one worker is SIGKILLed mid-run and the other stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.daemons import ROOT, wait_for

pytestmark = pytest.mark.e2e

ORDERS = 300
INTERVAL = 2.0
LEASE = 4.0
TICK = 0.5
JITTER = 0.05


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_workers_lost_mid_run_lose_no_item_and_poll_none_twice(daemon_env, service, sim, broker_url,  # noqa: F811
                                                               tmp_path):
    """Every item gets its change exactly once; items held by the killed worker come back after
    their lease; no order is fetched twice in one round; the SIGTERMed worker exits cleanly.
    (PostgreSQL, as in production; the single-machine SQLite topology is `poller run`.)"""
    env = dict(daemon_env, POLLER_BROKER_URL=broker_url, POLLER_TICK_SECONDS=str(TICK), POLLER_LEASE_SECONDS=str(LEASE),
               POLLER_WORKER_CONCURRENCY="2", POLLER_POLL_THREADS="4", POLLER_DISPATCH_CHUNK="25",
               POLLER_JITTER_RATIO=str(JITTER))
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, role: str) -> None:
        with open(tmp_path / f"{name}.log", "ab") as out:
            procs[name] = subprocess.Popen([sys.executable, "-m", "cli.main", role], env=env, cwd=ROOT, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)

    for n in range(ORDERS):
        sim.billit.create_order(5001 + n)
        service.track("billit", str(5001 + n), interval_s=INTERVAL)
    try:
        spawn("beat", "beat")
        spawn("a", "worker")
        spawn("b", "worker")
        wait_for("every order observed", lambda: len(service.events_after(0, 10_000)) >= ORDERS or None,
                 timeout=90, log=tmp_path / "a.log")
        sim.clock.advance(10)  # every order changes: one more event each
        wait_for("the round under way", lambda: len(service.events_after(0, 10_000)) >= ORDERS + 20 or None,
                 timeout=60, log=tmp_path / "a.log")
        os.killpg(procs["a"].pid, signal.SIGKILL)
        os.killpg(procs["b"].pid, signal.SIGTERM)
        assert procs["b"].wait(60) == 0  # a warm shutdown: running polls finish
        spawn("c", "worker")
        wait_for("every change recorded", lambda: len(service.events_after(0, 10_000)) >= 2 * ORDERS or None,
                 timeout=90, log=tmp_path / "c.log")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    per_item: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for e in service.events_after(0, 10_000):
        per_item[e.item_id].append((e.seq, e.data["status"]))
    assert len(per_item) == ORDERS
    assert all(v == [(1, "to_send"), (2, "pending_delivery")] for v in per_item.values())
    # No order fetched twice in one round: a double poll would be two GETs within milliseconds.
    # A regular one comes at least the interval less its jitter (all earlier) and less the half
    # tick dispatch looks ahead, with a little slack for when the GET reached the simulator.
    times: dict[str, list[float]] = defaultdict(list)
    for at, label, key in sim.request_log:
        if label == "billit":
            times[key].append(at)
    gaps = [b - a for ts in times.values() for a, b in zip(ts, ts[1:], strict=False)]
    assert len(times) == ORDERS and min(gaps) >= INTERVAL * (1 - JITTER) - TICK / 2 - 0.2, min(gaps)
