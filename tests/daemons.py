"""Running `poller run` in tests: its environment, the process, its children, and waiting on it.

The fixtures built from these (``daemon_env``, ``daemon``, ``daemon_service``) are in tests/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def wait_for(what: str, check: Callable[[], object], timeout: float = 30.0, proc=None, log: Path | None = None):
    """Re-check ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"poller exited ({proc.returncode}) while waiting for {what}\n{tail_log(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{tail_log(log)}")
        time.sleep(0.05)  # re-check interval of a condition wait, not a synchronization


def tail_log(log: Path | None) -> str:
    """The last 40 lines of a daemon's log, for a failure message."""
    return "\n".join(log.read_text().splitlines()[-40:]) if log and log.exists() else ""


class Daemon:
    """A `poller run` process group and the log it writes."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def interrupt(self) -> int:
        """Ctrl-C at the terminal: SIGINT to the whole process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=60)


def daemon_environment(db_url: str, sim_url: str, home: Path, secret_key: str) -> dict[str, str]:
    """The environment of a test's `poller run`: fast ticks and backoff, Billit at the simulator."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({
        "POLLER_HOME": str(home),
        # The test process stores secrets with this key; the daemon must read them.
        "POLLER_SECRET_KEYS": secret_key,
        "POLLER_DATABASE_URL": db_url,
        "POLLER_TICK_SECONDS": "0.2",
        "POLLER_LEASE_SECONDS": "20",
        "POLLER_BACKOFF_BASE_SECONDS": "0.4",
        "POLLER_BACKOFF_MAX_SECONDS": "1.5",
        "POLLER_FAILING_AFTER": "3",
        "POLLER_HTTP_TIMEOUT_SECONDS": "2",
        "POLLER_WORKER_CONCURRENCY": "2",
        "POLLER_LOG_FORMAT": "json",
        "POLLER_BILLIT__BASE_URL": sim_url,
        "POLLER_BILLIT__API_KEY": "sim-billit-key",
        "POLLER_BILLIT__PARTY_ID": "1234",
        # The breaker and the rate limit have their own tests (test_guard.py); here they would
        # only stretch the storm's timing.
        "POLLER_BILLIT__RATE_LIMIT_PER_SECOND": "1000",
        "POLLER_BREAKER_MIN_CALLS": "1000",
        # Tests that scrape metrics pick free ports themselves.
        "POLLER_METRICS_PORT": "0",
        "POLLER_BEAT_METRICS_PORT": "0",
        # `poller run` serves the API too: a free port, so tests running at once do not collide.
        "POLLER_API_PORT": "0",
    })
    return env


def start_daemon(env: dict[str, str], log: Path) -> Daemon:
    """`poller run` with ``env``, writing to ``log``, in its own process group."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "run"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Daemon(proc, log)


def daemon_children(pid: int) -> dict[str, int]:
    """The daemon's live children by role (``worker``, ``beat``, ``api``), from /proc."""
    try:
        pids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return {}
    out = {}
    for child in pids:
        try:
            name = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("poller-"):  # forked by `poller run`, named for its role (cli/forked.py)
            out[name.removeprefix("poller-")] = child
    return out
