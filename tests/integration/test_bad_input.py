"""Issue 9 #16: bad input is one line naming the argument or setting, exit 2, and nothing is written."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.peer import Answer, Peer
from tests.rows import update_items
from worker.policy import PollPolicy
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store.db import make_engine, make_sessionmaker, sqlite_url
from worker.store.migrate import upgrade
from worker.store.models import Item

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("POLLER_")}
    env.update({"POLLER_HOME": str(tmp_path / "var"), "POLLER_DATABASE_URL": sqlite_url(tmp_path / "cli.db"),
                "POLLER_BILLIT__API_KEY": "bad-input-key", "POLLER_BILLIT__PARTY_ID": "1234",
                "POLLER_WEBHOOK_ALLOW_HTTP": "true", "POLLER_WEBHOOK_ALLOW_PRIVATE": "true"})
    # A missing database is an error of its own (issue 9 #7): start from a migrated, empty one.
    engine = make_engine(env["POLLER_DATABASE_URL"])
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return env


def poller(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def ok(env: dict[str, str], *args: str) -> str:
    proc = poller(env, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def refused(env: dict[str, str], *args: str) -> str:
    """Run a command that must be refused: exit 2 and exactly one `error:` line, which is returned."""
    proc = poller(env, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def items(env: dict[str, str]) -> list[Item]:
    """The stored items, read directly (quicker than another `poller items`)."""
    engine = make_engine(env["POLLER_DATABASE_URL"])
    try:
        with Session(engine) as session:
            return list(session.scalars(select(Item)))
    finally:
        engine.dispose()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_track_refuses_a_provider_that_is_not_configured(env):
    """Issue 9 #16: `track` for a provider with no settings exited 0; now it names the settings to set."""
    line = refused(env, "track", "amili_collection", "A-1")
    assert "amili_collection account 'default' is not configured" in line
    for var in ("POLLER_AMILI_COLLECTION__CLIENT_ID", "POLLER_AMILI_COLLECTION__CLIENT_SECRET",
                "POLLER_AMILI_COLLECTION__ORG_ID"):
        assert var in line
    line = refused(env, "track", "amili_ada", "123")
    assert "POLLER_AMILI_ADA__PRIVATE_KEY or POLLER_AMILI_ADA__PRIVATE_KEY_FILE" in line
    del env["POLLER_BILLIT__API_KEY"]
    line = refused(env, "track", "billit", "1001")
    assert "POLLER_BILLIT__API_KEY or POLLER_BILLIT__CLIENT_ID and POLLER_BILLIT__CLIENT_SECRET and " \
           "POLLER_BILLIT__REFRESH_TOKEN" in line
    assert items(env) == []


def test_track_refuses_an_interval_out_of_range(env):
    """Issue 9 #16: `--interval 0` silently became 300 s, and the range read "0.1 and 2.6784e+06 seconds"."""
    for interval, got in (("0", "got 0 s"), ("-5", "got -5 s"), ("nan", "got nan s")):
        line = refused(env, "track", "billit", "1001", "--interval", interval)
        assert line == f"error: --interval must be 0.1 s to 31 days, {got}"
    assert items(env) == []


def test_resume_and_pause_refuse_a_finished_item(env):
    """Issue 9 #16: `resume` made a finished (terminal) item active again; it stays finished."""
    ok(env, "track", "billit", "1001")
    engine = make_engine(env["POLLER_DATABASE_URL"])
    try:
        with engine.begin() as conn:
            update_items(conn, state="terminal", last_status="paid", next_poll_at=None)
    finally:
        engine.dispose()
    assert refused(env, "resume", "1") == "error: item 1 is finished (final status 'paid'); it cannot be resumed"
    assert refused(env, "pause", "1") == "error: item 1 is finished (final status 'paid'); it cannot be paused"
    [item] = items(env)
    assert item.state == "terminal" and item.next_poll_at is None


def test_deliveries_of_an_unknown_event_is_an_error(env):
    """Issue 9 #16: `deliveries --event nope` printed nothing and exited 0."""
    assert refused(env, "deliveries", "--event", "nope") == "error: no event has id 'nope'"


def test_rotate_secret_with_a_bad_grace_exits_2(env):
    """Issue 9 #16: `rotate-secret --grace xyz` exited 1; it is bad input (exit 2) naming --grace."""
    ok(env, "webhooks", "add", "http://127.0.0.1:9/hook")
    for grace in ("xyz", "inf"):
        line = refused(env, "webhooks", "rotate-secret", "1", "--grace", grace)
        assert line.startswith("error: --grace must be a positive number of seconds"), line


def test_simulate_on_a_busy_port_is_one_line(env, busy_port):
    """Issue 9 #16: `simulate` on a port in use printed a traceback."""
    assert refused(env, "simulate", "--port", str(busy_port)) == f"error: port {busy_port} is in use (set --port)"


def test_api_on_a_busy_port_is_one_line(env, busy_port):
    """Issue 9 #16: a server (then `dashboard`, now `api`) on a port in use printed a traceback."""
    assert refused(env, "api", "--port", str(busy_port)) == f"error: port {busy_port} is in use (set --port)"


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_provider_json_nested_100k_levels_is_an_invalid_response(engine, clock):
    """Issue 9 #16: a provider body nested 100k levels was recorded as `internal error: RecursionError`."""
    with Peer(lambda request: Answer(body=DEEP)) as peer:
        service = PollerService(make_sessionmaker(engine), ProviderSet({"billit": BillitSettings(
            base_url=peer.url(), api_key="k", party_id="1")}), PollPolicy(), clock=clock, rng=random.Random(1))
        service.track("billit", "1001", interval_s=60)
        service.dispatch_due(service.poll_claims, lease_s=30, limit=10, chunk_size=10)
    [item] = service.items()
    assert item.last_error and "RecursionError" not in item.last_error and "internal error" not in item.last_error
    assert "nested" in item.last_error and item.consecutive_failures == 1


def test_simulator_refuses_json_nested_too_deeply(sim):
    """Issue 9 #16: the simulator's admin API answered a deeply nested body with 500 (RecursionError)."""
    resp = requests.post(f"{sim.url}/_sim/clock", data=DEEP, timeout=10)
    assert resp.status_code == 400 and "nested too deeply" in resp.text
