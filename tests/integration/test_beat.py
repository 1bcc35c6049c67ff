"""Exactly one effective scheduler: two `poller beat` processes, one sends; kill it, the other
takes over within POLLER_BEAT_FAILOVER_SECONDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.daemons import ROOT, wait_for

pytestmark = pytest.mark.e2e

FAILOVER = 3.0


def sends(log) -> int:
    return log.read_text().count("Sending due task dispatch-due") if log.exists() else 0


def test_two_beats_one_sends_and_the_standby_takes_over(daemon_env, broker_url, tmp_path):  # noqa: F811
    """The second beat stays silent while the first leads; after a SIGKILL of the leader, the
    standby sends within the failover time; a SIGTERM hands over at once."""
    procs = {}

    def start(name: str) -> None:
        env = dict(daemon_env, POLLER_BROKER_URL=broker_url, POLLER_HOME=str(tmp_path / name),
                   POLLER_BEAT_FAILOVER_SECONDS=str(FAILOVER), POLLER_LOG_LEVEL="INFO")
        with open(tmp_path / f"{name}.log", "ab") as out:
            procs[name] = subprocess.Popen([sys.executable, "-m", "cli.main", "beat"], env=env, cwd=ROOT, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)

    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b", "c")}
    try:
        start("a")
        wait_for("a leads", lambda: sends(logs["a"]) >= 3 or None, log=logs["a"])
        start("b")
        wait_for("b on standby", lambda: "beat.standby" in logs["b"].read_text() or None, log=logs["b"])
        base = sends(logs["a"])
        wait_for("a keeps leading", lambda: sends(logs["a"]) >= base + 10 or None, log=logs["a"])
        assert sends(logs["b"]) == 0
        os.killpg(procs["a"].pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for("b takes over", lambda: sends(logs["b"]) >= 1 or None, timeout=FAILOVER + 5, log=logs["b"])
        assert time.monotonic() - killed <= FAILOVER + 0.5
        start("c")
        wait_for("c on standby", lambda: "beat.standby" in logs["c"].read_text() or None, log=logs["c"])
        os.killpg(procs["b"].pid, signal.SIGTERM)  # a clean stop releases the lease
        stopped = time.monotonic()
        wait_for("c takes over", lambda: sends(logs["c"]) >= 1 or None, timeout=FAILOVER + 5, log=logs["c"])
        assert time.monotonic() - stopped <= FAILOVER / 6 + 1.5
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
