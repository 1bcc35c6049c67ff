"""Issue 9 #7: SQLite failures the workers see reach `poller health`; a missing database is an
error, not a silently created empty one. Real SQLite files, real Redis, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import Settings
from config.wiring import (
    check_worker_database,
    record_worker_fault,
    require_writable_database,
    worker_faults,
)
from worker.errors import ConfigurationError
from worker.status import check_health
from worker.store.db import make_engine, make_sessionmaker, sqlite_url
from worker.store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]


def settings_for(db: Path, broker_url: str) -> Settings:
    return Settings(database_url=sqlite_url(db), broker_url=broker_url, home=db.parent)


def migrated(db: Path) -> None:
    engine = make_engine(sqlite_url(db))
    upgrade(engine)
    engine.dispose()


def test_a_database_deleted_mid_run_fails_the_tick_and_health_says_so(tmp_path, broker_url):
    """Issue 9 #7: writes to a deleted SQLite file went on, invisibly, on the unlinked inode."""
    db = tmp_path / "poller.db"
    migrated(db)
    settings = settings_for(db, broker_url)
    assert check_worker_database(settings) is None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with pytest.raises(ConfigurationError, match="does not exist"):
        require_writable_database(settings)

    migrated(db)  # what a careless `poller track` used to do: a new, empty database
    with pytest.raises(ConfigurationError, match="was replaced"):
        require_writable_database(settings)

    record_worker_fault(settings, "polling.dispatch_due", "ConfigurationError: the database file was replaced")
    checks = {c.name: c for c in check_health(
        make_sessionmaker(make_engine(sqlite_url(db))), tick_s=5, max_lag_s=60, broker_ping=None,
        faults=lambda within: worker_faults(settings, broker_url, within_s=within))}
    assert not checks["workers"].ok
    assert "polling.dispatch_due: ConfigurationError: the database file was replaced" in checks["workers"].detail


def test_a_read_only_database_is_named_by_the_worker(tmp_path, broker_url):
    """Issue 9 #7: a worker process that cannot write the file failed every task while health said ok.

    Root writes through file modes, so the database sits on a file system mounted read-only, in a
    mount namespace of its own.
    """
    mnt = tmp_path / "ro"
    mnt.mkdir()
    db = mnt / "poller.db"
    check, create = tmp_path / "check.py", tmp_path / "create.py"
    check.write_text("import sys\nfrom pathlib import Path\nfrom config.settings import Settings\n"
                     "from config.wiring import check_worker_database\nfrom worker.store.db import sqlite_url\n"
                     f"p = Path({str(db)!r})\nr = check_worker_database(Settings(database_url=sqlite_url(p), "
                     f"broker_url={broker_url!r}, home=Path({str(tmp_path)!r})))\nprint(r)\nsys.exit(0 if r else 3)\n")
    create.write_text("from pathlib import Path\nfrom worker.store.db import make_engine, sqlite_url\n"
                      "from worker.store.migrate import upgrade\n"
                      f"upgrade(make_engine(sqlite_url(Path({str(db)!r}))))\n")
    script = (f"mount -t tmpfs none {mnt} && {sys.executable} {create} && mount -o remount,ro {mnt} && "
              f"{sys.executable} {check}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{db} is not writable by this process" in proc.stdout, proc.stdout
    faults = worker_faults(settings_for(db, broker_url), broker_url, within_s=60)
    assert faults and faults[0].where == "database" and f"{db} is not writable" in faults[0].error


def test_a_missing_database_is_an_error_for_every_command_but_migrate(tmp_path):
    """Issue 9 #7: after the database was deleted, the next CLI command silently created an empty one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    db = tmp_path / "gone.db"
    env.update({"POLLER_HOME": str(tmp_path / "var"), "POLLER_DATABASE_URL": sqlite_url(db)})

    def poller(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    for args in (("items",), ("status",), ("health",), ("events",)):
        proc = poller(*args)
        assert proc.returncode != 0 and f"no database at {db}; run `poller migrate`" in proc.stderr, (args, proc)
        assert not db.exists()
    assert poller("migrate").returncode == 0 and db.exists()
    assert poller("items").returncode == 0
