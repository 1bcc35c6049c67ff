"""The `poller` command as a user runs it: a subprocess, its output and its exit code."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET_KEY
from worker.policy import PollPolicy
from worker.providers.billit import BillitSettings
from worker.providers.registry import REGISTRY, ProviderSet
from worker.service import PollerService
from worker.store.db import make_engine, make_sessionmaker, sqlite_url
from worker.store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]


def cli_env(db_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `poller` command on ``db_url``: Billit configured (`track` refuses a
    provider that is not), the test's secret key (PostgreSQL has no key file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({"POLLER_HOME": str(home), "POLLER_DATABASE_URL": db_url, "POLLER_SECRET_KEYS": TEST_SECRET_KEY,
                "POLLER_BILLIT__API_KEY": "cli-test-key", "POLLER_BILLIT__PARTY_ID": "1234", **extra})
    return env


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    env = cli_env(sqlite_url(tmp_path / "cli.db"), tmp_path / "var")
    # Only `poller migrate` (and `poller run`) create a database; every other command needs one.
    engine = make_engine(env["POLLER_DATABASE_URL"])
    upgrade(engine)
    engine.dispose()
    return env


def poller(env: dict[str, str], *args: str, ok: bool = True, input: str | None = None,
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, input=input,
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_track_items_untrack(env):
    """track prints the id; items lists it (table and JSON); untrack removes it."""
    assert poller(env, "track", "billit", "1001", "--interval", "60").stdout.strip() == "1"
    assert poller(env, "track", "billit", "1002").stdout.strip() == "2"
    table = poller(env, "items").stdout
    assert table.splitlines()[0].split()[:6] == ["ID", "PROVIDER", "ACCOUNT", "KIND", "REF", "STATE"]
    rows = json.loads(poller(env, "items", "--json").stdout)
    assert [(r["id"], r["ref"], r["state"], r["interval_seconds"]) for r in rows] == [
        (1, "1001", "active", 60.0), (2, "1002", "active", 300.0)]
    assert set(rows[0]) >= {"last_status", "last_poll_at", "next_poll_at", "consecutive_failures",
                            "last_error"}
    assert "untracked item 1" in poller(env, "untrack", "1").stdout
    assert [r["id"] for r in json.loads(poller(env, "items", "--json").stdout)] == [2]


@pytest.mark.parametrize(("args", "message"), [
    (("track", "nope", "1"), f"unknown provider 'nope'; known: {', '.join(sorted(REGISTRY))}"),
    (("track", "billit", "12ab"), "numeric OrderID, got '12ab'"),
    (("track", "billit", "5", "--interval", "-1"), "--interval must be 0.1 s to 31 days, got -1 s"),
    (("track", "billit", "5", "--label", "customer"), "--label 'customer' must be key=value (e.g. customer=acme)"),
    (("track", "billit", "5", "--label", "bad key=x"), "label key 'bad key' must be"),
    (("track", "billit", "5", "--account", "acme"), "account 'acme'"),
    (("track", "billit"), "give PROVIDER and REF"),
    (("track", "billit", "5", "--file", "items.csv"), "--file takes every field from the file; drop PROVIDER, REF"),
    (("untrack", "99"), "no tracked item has id 99"),
    (("pause", "99"), "no tracked item has id 99"),
    (("events", "--after", "evt_nope"), "no event has id 'evt_nope'"),
])
def test_bad_input_is_a_clear_error_and_stores_nothing(env, args, message):
    """Each mistake exits 2 with one line naming what was wrong; the items are unchanged."""
    poller(env, "track", "billit", "1001")
    proc = poller(env, *args, ok=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {message}" or message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [r["ref"] for r in json.loads(poller(env, "items", "--json").stdout)] == ["1001"]


def test_invalid_setting_names_the_variable(env):
    """A bad environment value is refused at start, naming the variable."""
    env["POLLER_TICK_SECONDS"] = "-1"
    proc = poller(env, "items", ok=False)
    assert proc.returncode == 2
    assert "POLLER_TICK_SECONDS: Input should be greater than 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_without_broker_says_what_to_set(env):
    """`poller worker` needs a shared broker and says which variable to set."""
    proc = poller(env, "worker", ok=False)
    assert proc.returncode == 2 and "POLLER_BROKER_URL is not set" in proc.stderr


def _make_events(env, sim, clock) -> None:
    """Track two orders and poll them through two stages, in-process."""
    engine = make_engine(env["POLLER_DATABASE_URL"])
    service = PollerService(make_sessionmaker(engine), ProviderSet({"billit": BillitSettings(
        base_url=sim.url, api_key="sim-billit-key", party_id="1234")}), PollPolicy(),
        clock=clock, rng=random.Random(1))
    for ref in (1001, 1002):
        sim.billit.create_order(ref)
        service.track("billit", str(ref), interval_s=1)
    for _ in range(2):
        service.dispatch_due(service.poll_claims, lease_s=10, limit=10, chunk_size=10)
        sim.clock.advance(10)
        clock.advance(2)
    engine.dispose()


def test_events_json_lines_and_after(env, sim, clock):
    """events --json prints one object per line with id, type, created_at, data; --after skips."""
    poller(env, "migrate")
    _make_events(env, sim, clock)
    lines = poller(env, "events", "--json").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["status.observed"] * 2 + ["status.changed"] * 2
    assert all({"id", "type", "created_at", "data"} <= set(e) for e in events)
    assert events[2]["data"]["previous_status"] == "to_send" and events[2]["data"]["changes"]
    later = [json.loads(x) for x in poller(env, "events", "--json", "--after", events[1]["id"]).stdout.splitlines()]
    assert [e["id"] for e in later] == [e["id"] for e in events[2:]]
    human = poller(env, "events").stdout.splitlines()
    assert "to_send -> pending_delivery" in human[2] and "order_status" in human[2]


def test_events_follow_prints_new_events(env, sim, clock):
    """events --follow keeps running and prints events as they are written."""
    poller(env, "migrate")
    with subprocess.Popen([sys.executable, "-m", "cli.main", "events", "--json", "--follow",
                           "--poll-seconds", "0.1"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as proc:
        try:
            _make_events(env, sim, clock)
            got = [json.loads(proc.stdout.readline()) for _ in range(4)]  # blocks until printed
            assert [e["type"] for e in got] == ["status.observed"] * 2 + ["status.changed"] * 2
        finally:
            proc.terminate()


def test_prune_dry_run_then_prune_then_a_stale_cursor_is_refused(env, sim, clock):
    """`poller prune --dry-run` counts and removes nothing; `poller prune` removes the same; a
    cursor from before the removed events exits 2 naming the oldest retained one; `poller status`
    shows the database's size and rows."""
    poller(env, "migrate")
    _make_events(env, sim, clock)  # on the test clock, days before the real now
    first = json.loads(poller(env, "events", "--json").stdout.splitlines()[0])["id"]
    env["POLLER_RETENTION_EVENTS"] = "1d"
    dry = json.loads(poller(env, "prune", "--dry-run", "--json").stdout)
    assert dry == {"dry_run": True, "would_remove": {"delivery_attempts": 0, "events": 4, "snapshots": 0, "items": 0}}
    assert len(poller(env, "events", "--json").stdout.splitlines()) == 4
    assert "events             removed 4" in poller(env, "prune").stdout
    assert poller(env, "events", "--json").stdout == ""
    stale = poller(env, "events", "--after", first, ok=False)
    assert stale.returncode == 2 and "before the retained events" in stale.stderr
    assert "no event is retained" in stale.stderr
    status = poller(env, "status").stdout
    assert "database " in status and "events 0" in status and "snapshots 4" in status
