"""Only `poller migrate`, `poller run` and `poller worker` change the schema: every other command, on
a database a migration behind, says to run `poller migrate` and leaves the database as it was."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tests.conftest import missing
from tests.integration.test_cli import ROOT, cli_env, poller
from worker.store.db import create_database, drop_database, make_engine, sqlite_url
from worker.store.migrate import alembic_config, upgrade

#: The revision before the API's (0007).
BEHIND = "0006"
#: The latest revision, whatever it is when this runs.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

#: Every command that is not allowed to migrate, reading and writing alike.
COMMANDS = [("items",), ("events",), ("status",), ("health",), ("deliveries",), ("webhooks", "list"),
            ("keys", "list"), ("track", "billit", "1001"), ("keys", "create", "ci"), ("untrack", "1"),
            ("webhooks", "add", "https://example.com/hook"), ("api", "--port", "0"), ("prune",)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_db(request, tmp_path, pg_admin_url) -> Iterator[str]:
    """A database of each kind at revision 0006."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "old.db")
    else:
        if not pg_admin_url:
            missing("PostgreSQL (TEST_DATABASE_URL)")
        url = create_database(pg_admin_url, f"poller_test_{uuid.uuid4().hex[:12]}")
    engine = make_engine(url)
    upgrade(engine, BEHIND)
    engine.dispose()
    yield url
    if request.param == "postgresql":
        drop_database(pg_admin_url, url)


def revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@pytest.mark.timeout(300)  # a dozen commands of ~1.5 s CPU each, on a shared machine
def test_no_command_but_migrate_changes_the_schema(old_db, tmp_path):
    env = cli_env(old_db, tmp_path / "var", POLLER_API_PORT="0")
    # At once: they only read the revision (one that migrated would also fail the check below).
    procs = {args: subprocess.Popen([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in COMMANDS}
    try:
        for args, proc in procs.items():
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 2, (args, out, err)
            assert err.strip() == f"error: the database schema is at revision {BEHIND}, this poller needs {HEAD}; " \
                                  "run `poller migrate` (`poller run` migrates on start)", (args, err)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.communicate()
    assert revision(old_db) == BEHIND
    assert poller(env, "migrate").stdout.strip() == "database is up to date"
    assert revision(old_db) == HEAD
    assert "none tracked" in poller(env, "status").stdout
