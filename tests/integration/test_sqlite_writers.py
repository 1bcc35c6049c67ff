"""SQLite's writers take turns on one lock (issue 13): a writer waiting behind a series of short
transactions gets in at the first pause, and still gives up after the busy timeout when the lock
never comes free.

SQLite's own busy handler sleeps 1, 2, 5, ... 25, 50, then 100 ms between tries, so a writer behind
transactions of 45 ms with pauses of 5 ms (a cycle of 50 ms) woke at the same point of every cycle
and missed each pause: it waited until the other writer stopped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import exc

from worker.store.db import make_engine, sqlite_url

CYCLES = 60  # of the other writer's: 3 s


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "writers.db"
    engine = make_engine(sqlite_url(path))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine.dispose()
    return path


class Holder:
    """Another writer: BEGIN IMMEDIATE, ``hold_s``, COMMIT, ``pause_s``, ``cycles`` times."""

    def __init__(self, path: Path, *, hold_s: float, pause_s: float, cycles: int) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
        self.hold_s, self.pause_s, self.cycles = hold_s, pause_s, cycles
        self.done, self.held = 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for n in range(self.cycles):
            self.conn.execute("BEGIN IMMEDIATE")
            self.done = n + 1
            self.held.set()
            time.sleep(self.hold_s)
            self.conn.execute("COMMIT")
            time.sleep(self.pause_s)

    def __enter__(self) -> Holder:
        self.thread.start()
        self.held.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(30)
        self.conn.close()


def test_a_writer_gets_in_at_the_first_pauses_of_another_writers_short_transactions(path):
    engine = make_engine(sqlite_url(path), busy_timeout_s=10)
    with Holder(path, hold_s=0.045, pause_s=0.005, cycles=CYCLES) as other:
        with engine.begin() as conn:
            got_in_after = other.done
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    engine.dispose()
    # SQLite's busy handler alone got in only once the other writer had stopped (cycle 60).
    assert got_in_after <= 5, f"the writer got the lock after {got_in_after} of the other writer's transactions"


def test_a_writer_still_gives_up_after_the_busy_timeout_and_keeps_its_patience_inside(path):
    engine = make_engine(sqlite_url(path), busy_timeout_s=0.3)
    with Holder(path, hold_s=1.5, pause_s=0, cycles=1):
        started = time.monotonic()
        with pytest.raises(exc.OperationalError, match="database is locked"), engine.begin():
            pass
        waited = time.monotonic() - started
    assert 0.3 <= waited < 1.5
    with engine.begin() as conn:  # free now; statements inside a transaction wait as configured
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 300
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_commit_leaves_the_log_to_the_dispatch_tick(db_url, engine):
    """A commit that takes SQLite's log past 1,000 pages copied the log into the database file
    before it returned (during a day's prune, 170-220 ms of a 20 ms delivery claim); now the
    commit leaves the pages in the log and the dispatch tick copies them."""
    from worker.policy import PollPolicy
    from worker.providers.registry import ProviderSet
    from worker.service import PollerService
    from worker.store.db import make_sessionmaker, sqlite_file

    path = sqlite_file(db_url)
    assert path is not None
    before = path.stat().st_size
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bulk (x BLOB)")
        conn.exec_driver_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) "
                             "INSERT INTO bulk SELECT randomblob(4000) FROM n")  # 2,500 pages and more
    assert path.stat().st_size == before  # still in the log
    PollerService(make_sessionmaker(engine), ProviderSet({}), PollPolicy()).dispatch_due(
        lambda claims: None, lease_s=30, limit=10, chunk_size=10)
    assert path.stat().st_size >= before + 2500 * 4000
