"""`poller status` and `poller health`: what the people on call read first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

from cli.embedded import free_port
from worker.status import check_health, read_status
from worker.store import repo
from worker.store.db import make_sessionmaker

ROOT = Path(__file__).resolve().parents[2]


def _items(sessions, clock, n_overdue: int) -> None:
    with sessions.begin() as s:
        for n in range(n_overdue):
            repo.add_item(s, provider="billit", account="default", kind="order", ref=str(n), interval_s=60,
                          now=clock() - timedelta(seconds=30 + n))


def test_status_figures(engine, clock):
    """Items by provider and state, overdue with the oldest, and the last dispatch tick."""
    sessions = make_sessionmaker(engine)
    _items(sessions, clock, 3)
    st = read_status(sessions, tick_s=5, clock=clock)
    assert st.items == {"billit": {"active": 3}} and st.overdue == 3 and st.most_overdue_seconds == 32
    assert st.last_tick is None
    with sessions.begin() as s:
        repo.claim_due(s, now=clock(), lease_s=60, limit=10)
    from worker.status import record_heartbeat

    with sessions.begin() as s:
        record_heartbeat(s, "dispatch", at=clock(), seconds=0.01, claimed=3)
    st = read_status(sessions, tick_s=5, clock=clock)
    assert st.overdue == 0 and st.last_tick == clock() and st.to_dict()["last_tick_seconds"] == 0.01


def test_two_ticks_recording_the_first_heartbeat_at_once_both_succeed(engine, clock):
    """Two dispatch ticks on a fresh database both write the first heartbeat: the second waits for
    the first and updates the row (a read-then-insert failed it on PostgreSQL's unique key, and the
    task failure made `poller health` fail)."""
    from worker.status import record_heartbeat

    sessions = make_sessionmaker(engine)
    errors: list[BaseException] = []
    first = sessions()
    first.begin()
    record_heartbeat(first, "dispatch", at=clock(), seconds=0.01, claimed=1)

    def second() -> None:
        try:
            with sessions.begin() as s:
                record_heartbeat(s, "dispatch", at=clock() + timedelta(seconds=1), seconds=0.02, claimed=2)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    other = threading.Thread(target=second)
    other.start()
    other.join(0.5)  # it waits on the first's row lock (PostgreSQL) or write lock (SQLite)
    first.commit()
    first.close()
    other.join(30)
    assert not other.is_alive() and errors == []
    st = read_status(sessions, tick_s=5, clock=clock)
    assert st.last_tick == clock() + timedelta(seconds=1) and st.last_tick_seconds == 0.02


def test_health_says_why(engine, clock, broker_url):
    """Each failing check names its cause: no tick yet, a stale tick, a lagging backlog, a dead broker."""
    import redis

    sessions = make_sessionmaker(engine)

    def verdicts(**kw):
        return {c.name: c.ok for c in check_health(sessions, tick_s=5, clock=clock, **kw)}

    def ping():
        redis.Redis.from_url(broker_url).ping()

    def dead():
        redis.Redis(port=free_port(), socket_connect_timeout=0.5).ping()

    assert verdicts(max_lag_s=60, broker_ping=ping) == {"database": True, "broker": True, "beat": False, "lag": True,
                                                          "items": True, "providers": True}
    from worker.status import record_heartbeat

    with sessions.begin() as s:
        record_heartbeat(s, "dispatch", at=clock(), seconds=0.01, claimed=0)
    assert all(verdicts(max_lag_s=60, broker_ping=ping).values())
    clock.advance(16)
    assert verdicts(max_lag_s=60, broker_ping=ping)["beat"] is False
    with sessions.begin() as s:
        record_heartbeat(s, "dispatch", at=clock(), seconds=0.01, claimed=0)
    _items(sessions, clock, 1)
    clock.advance(100)
    with sessions.begin() as s:
        record_heartbeat(s, "dispatch", at=clock(), seconds=0.01, claimed=0)
    checks = check_health(sessions, tick_s=5, clock=clock, max_lag_s=60, broker_ping=dead)
    bad = {c.name: c.detail for c in checks if not c.ok}
    assert set(bad) == {"broker", "lag"} and "oldest by 130.0s" in bad["lag"] and "unreachable" in bad["broker"]


def test_cli_health_exit_codes_and_status_json(tmp_path):
    """`poller health` exits 1 with reasons before any tick; `poller status --json` is one object."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({"POLLER_HOME": str(tmp_path / "var")})

    def poller(*args):
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    assert poller("migrate").returncode == 0
    proc = poller("health")
    assert proc.returncode == 1 and "FAIL  beat" in proc.stdout and "ok    database" in proc.stdout
    st = json.loads(poller("status", "--json").stdout)
    assert set(st) >= {"items", "overdue", "failing", "deliveries_pending", "oldest_pending_seconds", "last_tick"}


def test_status_weighs_postgresqls_buffers_against_what_every_poll_reads(engine, clock):
    """On PostgreSQL `poller status` gives shared_buffers beside the items and schedules every poll
    reads, and says SMALL when they do not fit (at 1,000,000 items and the default 128 MB a poll's
    writes went over 50 ms at p95); SQLite, read through the OS's cache, has no such line."""
    from dataclasses import replace

    from sqlalchemy import text

    from cli.render import status_table

    sessions = make_sessionmaker(engine)
    _items(sessions, clock, 3)
    st = read_status(sessions, tick_s=5, clock=clock)
    assert st.store is not None
    if engine.dialect.name == "sqlite":
        assert st.store.cache_bytes is None and not st.store.cache_short
        assert "database cache" not in status_table(st)
        return
    with engine.connect() as conn:
        buffers = conn.execute(text("SELECT pg_size_bytes(current_setting('shared_buffers'))")).scalar_one()
    assert st.store.cache_bytes == buffers and 0 < st.store.hot_bytes < buffers and not st.store.cache_short
    line = next(x for x in status_table(st).splitlines() if x.startswith("database cache"))
    assert f"shared_buffers {buffers / 1e6:.1f} MB" in line and "SMALL" not in line
    assert st.to_dict()["store"]["cache_short"] is False
    st.store = replace(st.store, hot_bytes=buffers + 1)  # as at 1,000,000 items with the default
    assert st.store.cache_short and "SMALL: every poll reads past it" in status_table(st)
