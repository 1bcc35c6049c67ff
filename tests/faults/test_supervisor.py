"""`poller run` heals itself: its embedded Redis, its worker and its beat SIGKILLed one after the
other come back, polling and delivery go on with nothing lost or doubled, and the restarts are
counted on the worker's /metrics; a child that keeps dying stops the daemon with one line; a
second daemon on the same home refuses, naming the first one's pid.

The real daemon on SQLite with its embedded Redis; the scenario's orders, receiver and end checks
come from the fault harness.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from cli.embedded import free_port
from tests.daemons import Daemon, start_daemon, wait_for
from tests.daemons import daemon_children as children
from tests.faults.harness import ROOT, Topology, wait_until
from worker.store.db import make_engine, sqlite_url
from worker.store.migrate import upgrade

pytestmark = pytest.mark.faults


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the daemon's own default database (PostgreSQL has its own scenarios)."""
    url = sqlite_url(tmp_path / "poller.db")
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def redis_pid(url: str) -> int | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()


def restarts(port: int) -> dict[str, float]:
    """``poller_restarts_total`` by process from the worker's /metrics ({} while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {m[0]: float(m[1]) for m in re.findall(r'^poller_restarts_total\{process="(\w+)"\} (\S+)$', text, re.M)}


@pytest.fixture
def topo(db_url, sim, receiver, tmp_path) -> Iterator[Topology]:
    t = Topology("supervisor", db_url=db_url, sim=sim, receiver=receiver, tmp_path=tmp_path, broker_url="",
                 interval=1.0, POLLER_BEAT_FAILOVER_SECONDS="3", POLLER_METRICS_PORT=str(free_port()),
                 POLLER_API_PORT="0")
    del t.env["POLLER_BROKER_URL"]  # `poller run` starts its embedded Redis
    yield t
    t.close()


def stop(d: Daemon) -> int:
    """Ctrl-C the daemon; SIGKILL what is left if it does not stop (a failure, reported by the caller)."""
    try:
        return d.interrupt()
    except subprocess.TimeoutExpired:
        os.killpg(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
        return -9


def test_redis_worker_and_beat_killed_come_back(topo, tmp_path):
    topo.track(30, first_ref=5000)
    d = start_daemon(topo.env, tmp_path / "run.log")
    home, port = Path(topo.env["POLLER_HOME"]), int(topo.env["POLLER_METRICS_PORT"])

    def log() -> str:
        lines = d.log.read_text(errors="replace").splitlines()
        own = [line for line in lines if line.startswith(("poller:", "error:"))]
        return f"{topo.logs()}\n--- run.log, the daemon's own lines\n" + "\n".join(own) + "\n--- run.log\n" + \
            "\n".join(lines[-30:])

    def restarted(pid_of: Callable[[], int | None], old: int) -> bool:
        if d.proc.poll() is not None:
            pytest.fail(f"poller run exited ({d.proc.returncode})\n{log()}")
        return pid_of() not in (None, old)

    try:
        topo.wait_caught_up("every order observed", timeout=60)
        broker = (home / "broker-url").read_text().strip()
        wait_until("restarts at 0 on /metrics",
                   lambda: restarts(port) == {"redis": 0, "worker": 0, "beat": 0, "api": 0}, 30, log)

        # A second daemon on the same home refuses at once, naming the first, starting nothing.
        second = subprocess.run([sys.executable, "-m", "cli.main", "run"], env=topo.env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines() == [
            f"error: another `poller run` (pid {d.proc.pid}) is running on POLLER_HOME {home.resolve()}; "
            "stop it first, or give this one another POLLER_HOME"]
        assert d.proc.poll() is None and (home / "broker-url").read_text().strip() == broker

        pids = {"redis": lambda: redis_pid(broker), "worker": lambda: children(d.proc.pid).get("worker"),
                "beat": lambda: children(d.proc.pid).get("beat")}
        counted = {"redis": 0.0, "worker": 0.0, "beat": 0.0, "api": 0.0}
        # Redis while the orders' changes are being polled, Redis again while their events are being
        # delivered, then the worker's main process, then beat.
        for name, during in (("redis", "polling"), ("redis", "delivery"), ("worker", None), ("beat", None)):
            pid_of = pids[name]
            old = wait_until(f"{name}'s pid", pid_of, 30, log)
            if during is not None:
                topo.advance()  # every order changes now: polls start at the next tick
                if during == "delivery":
                    wait_until("the changes recorded, deliveries under way", topo.caught_up, 60, log)
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            wait_until(f"{name} restarted", lambda pid_of=pid_of, old=old: restarted(pid_of, old), 60, log)
            assert re.search(rf"^poller: {name} \(pid {old}\) killed by SIGKILL; restart \d in ", d.log.read_text(),
                             re.M), log()
            if during is None:
                topo.advance()  # polling goes on: every order reaches its next status (none twice; see finish)
            took = topo.recovered(killed, f"every change after the {name} kill", timeout=60)
            counted[name] += 1
            # At least what we killed: a worker may also leave by itself when its Redis went away
            # (Celery gives up on a broker it cannot get back in time); the supervisor restarts it too.
            wait_until(f"restarts counted ({name})", lambda: all(
                restarts(port).get(k, -1) >= n for k, n in counted.items()), 30, log)
            assert d.proc.poll() is None, log()
            print(f"{name} killed during {during or 'polling'}: restarted and caught up in {took:.1f} s", flush=True)
        for _ in range(5):  # the orders' remaining stages (five at most)
            if all(docs[-1].terminal for docs in topo.history.docs.values()):
                break
            topo.advance()
            topo.wait_caught_up("the remaining stages")
        assert all(docs[-1].terminal for docs in topo.history.docs.values())
        # The heartbeat resumed: `poller health` from another shell is all green again.
        wait_until("poller health ok", lambda: subprocess.run(
            [sys.executable, "-m", "cli.main", "health"], env=topo.env, cwd=ROOT, capture_output=True,
            timeout=60).returncode == 0, 60, log)
        topo.finish()
    finally:
        code = stop(d)
    assert code == 0, log()
    assert redis_pid(broker) is None  # the embedded Redis stopped with it
    assert "poller: stopping" in d.log.read_text()


def test_a_child_that_keeps_dying_stops_the_daemon(topo, tmp_path):
    # A real way for beat alone to die at once: its schedule file can be neither opened nor
    # removed (directories where each dbm backend's files go; celery's repair cannot unlink them).
    home = Path(topo.env["POLLER_HOME"])
    for suffix in ("", ".db", ".dat"):
        (home / f"celerybeat-schedule{suffix}").mkdir(parents=True)
    d = start_daemon(topo.env, tmp_path / "run.log")
    try:
        code = d.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        stop(d)
        pytest.fail("the daemon did not give up\n" + d.log.read_text(errors="replace")[-4000:])
    out = d.log.read_text(errors="replace")
    assert code == 1, out[-4000:]
    assert out.rstrip().splitlines()[-1] == "error: beat keeps dying (5 times within 60 s, last: exit status 1)"
    assert [int(c) for c in re.findall(r"^poller: beat \(pid \d+\) exit status 1; restart (\d) in", out, re.M)] \
        == [1, 2, 3, 4]
    broker = re.search(r"^poller: broker (redis://\S+) \(embedded\)$", out, re.M)
    assert broker and redis_pid(broker.group(1)) is None  # everything else stopped too
    assert not (home / "broker-url").exists()
    # The lock went with the daemon: a new one may start (and stop at once on Ctrl-C).
    again = start_daemon(topo.env, tmp_path / "again.log")
    wait_for("the next daemon running", lambda: "poller: running" in again.log.read_text(), 60, again.proc, again.log)
    assert stop(again) == 0
