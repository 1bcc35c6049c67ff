"""End to end: `poller run` (a real Celery worker and beat, real Redis) against the simulator.

Time in the simulator moves only when the test says so; the poller runs on real time with a
fast tick. Waiting is by checking the database until a condition holds or a deadline passes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import redis
import requests

from tests.daemons import ROOT, daemon_children, start_daemon, tail_log, wait_for
from worker.service import PollerService

pytestmark = pytest.mark.e2e

STAGE = 10.0


def sequences(service: PollerService) -> dict[int, list[tuple[int, str, str | None]]]:
    out: dict[int, list] = {}
    for e in service.events_after(0):
        out.setdefault(e.item_id, []).append((e.seq, e.type, e.data["status"]))
    return out


PAID = ["to_send", "pending_delivery", "delivered", "received", "paid"]
REFUSED = ["to_send", "pending_delivery", "refused", "credited"]


def expected(statuses: list[str]) -> list[tuple[int, str, str]]:
    return [(n + 1, "status.observed" if n == 0 else "status.changed", s) for n, s in enumerate(statuses)]


def test_orders_live_and_storm_through_real_worker(daemon, service, sim):
    """Three orders, polled by Celery, give their exact event sequences; a 500/429 storm backs
    off, raises poll.failing once and poll.recovered when it ends."""
    for ref, scenario in ((1001, "paid"), (1002, "refused"), (1003, "paid")):
        sim.billit.create_order(ref, scenario)
    ids = [service.track("billit", str(ref), interval_s=0.3).id for ref in (1001, 1002, 1003)]
    lives = dict(zip(ids, (PAID, REFUSED, PAID), strict=True))
    for stage in range(5):
        want = {i: expected(life[:stage + 1]) for i, life in lives.items()}
        wait_for(f"stage {stage} events", lambda want=want: sequences(service) == want or None,
                 proc=daemon.proc, log=daemon.log)
        sim.clock.advance(STAGE)
    items = {i.id: i for i in service.items()}
    assert all(items[i].state == "terminal" and items[i].next_poll_at is None for i in ids)
    assert len({e.id for e in service.events_after(0)}) == 5 + 4 + 5

    # The storm: 500s until the failing alert, then a 429 with Retry-After, then recovery.
    sim.billit.create_order(1004)
    storm = service.track("billit", "1004", interval_s=0.3).id
    wait_for("observed 1004", lambda: storm in sequences(service), proc=daemon.proc, log=daemon.log)
    sim.faults.add("billit", "500")
    wait_for("poll.failing", lambda: any(e.type == "poll.failing" for e in service.events_after(0)),
             proc=daemon.proc, log=daemon.log)
    item = next(i for i in service.items() if i.id == storm)
    gap = (item.next_poll_at - item.last_polled_at).total_seconds()
    assert item.consecutive_failures >= 3 and item.failing and "answered 500" in item.last_error
    ceiling = min(1.5, 0.4 * 2 ** (item.consecutive_failures - 1))  # base 0.4, cap 1.5
    assert ceiling / 2 <= gap <= ceiling, gap  # backed off, equal jitter
    sim.faults.clear()
    sim.faults.add("billit", "429", retry_after=3)
    wait_for("a 429 recorded", lambda: "429" in (next(
        i for i in service.items() if i.id == storm).last_error or ""), proc=daemon.proc, log=daemon.log)
    item = next(i for i in service.items() if i.id == storm)
    assert (item.next_poll_at - item.last_polled_at).total_seconds() >= 3  # Retry-After honoured
    sim.faults.clear()
    wait_for("poll.recovered", lambda: any(e.type == "poll.recovered" for e in service.events_after(0)),
             timeout=30, proc=daemon.proc, log=daemon.log)
    storm_events = [t for _, t, _ in sequences(service)[storm]]
    assert storm_events == ["status.observed", "poll.failing", "poll.recovered"]
    # Nothing happened twice for the finished orders while the storm went on.
    assert {i: sequences(service)[i] for i in ids} == {i: expected(life) for i, life in lives.items()}
    # The logs: JSON lines bound to their task, and the API key in none of them.
    lines = [json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")]
    polled = [r for r in lines if r.get("event") == "event.created"]
    assert polled and all(r.get("task_id") and r.get("item_id") and r.get("provider") for r in polled)
    assert "sim-billit-key" not in daemon.log.read_text()


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_ctrl_c_stops_everything_cleanly(daemon_env, tmp_path, sim, service):
    """`poller run` on embedded defaults: it migrates, polls, serves the API (a killed API comes
    back on the same port), and Ctrl-C stops worker, beat, API and the embedded Redis."""
    daemon_env.pop("POLLER_BROKER_URL", None)
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=0.3)
    d = start_daemon(daemon_env, tmp_path / "run.log")
    try:
        wait_for("first event", lambda: service.events_after(0), proc=d.proc, log=d.log)
        log = d.log.read_text()
        port = int(log.split("broker redis://127.0.0.1:")[1].split("/")[0])
        assert redis.Redis(port=port).ping()
        # `poller health` from another shell finds the embedded broker and a fresh tick.
        health = subprocess.run([sys.executable, "-m", "cli.main", "health"], env=daemon_env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr
        assert "ok    broker    reachable" in health.stdout

        found = re.search(r"^poller: API on (http://127\.0\.0\.1:\d+/) \(docs \1docs\)$", log, re.M)
        assert found, log
        api = found.group(1)
        assert requests.get(api + "healthz", timeout=10).json() == {"status": "ok"}
        ready = requests.get(api + "readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["failing"] == [], ready.text
        old = wait_for("the API child", lambda: daemon_children(d.proc.pid).get("api"), proc=d.proc, log=d.log)
        os.kill(old, signal.SIGKILL)
        new = wait_for("the API restarted", lambda: (daemon_children(d.proc.pid).get("api") or old) != old and
                       daemon_children(d.proc.pid)["api"], proc=d.proc, log=d.log)
        assert re.search(rf"^poller: api \(pid {old}\) killed by SIGKILL; restart 1 in ", d.log.read_text(), re.M)
        assert f"poller: api restarted (pid {new})" in d.log.read_text()
        wait_for("the restarted API answering", lambda: answers(api + "healthz"), proc=d.proc, log=d.log)
    finally:
        code = d.interrupt()
    assert code == 0, tail_log(d.log)
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=0.5).ping()
    assert not answers(api + "healthz")  # the API stopped with it, its port closed
    assert "poller: stopping" in d.log.read_text()
