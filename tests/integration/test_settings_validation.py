"""Issue 9 #6: every setting is checked when a `poller` command starts, not when it is first used.

Each bad value or misspelt variable is one line on stderr naming the variable and what it must be,
exit 2, and nothing is created: no database, no data directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("POLLER_")}
    env.update({"POLLER_HOME": str(tmp_path / "var"),
                "POLLER_DATABASE_URL": f"sqlite+pysqlite:///{tmp_path / 'poller.db'}"})
    return env


def poller(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def assert_refused(proc: subprocess.CompletedProcess[str], *expected: str, tmp_path: Path) -> str:
    """Exit 2, one `error:` line holding every expected part, and nothing created."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for part in expected:
        assert part in lines[0], proc.stderr
    assert not (tmp_path / "poller.db").exists() and not (tmp_path / "var").exists()
    return lines[0]


#: (variable, bad value, part of what the message says it must be)
BAD_VALUES = [
    ("POLLER_LEASE_SECONDS", "inf", "finite number"),
    ("POLLER_LEASE_SECONDS", "2", "more than half of POLLER_TICK_SECONDS"),
    ("POLLER_WEBHOOK_RETRY_SCHEDULE", "5,soon,60", "comma-separated seconds"),
    ("POLLER_WEBHOOK_DISABLE_AFTER", "forever", "s/m/h/d"),
    ("POLLER_BROKER_URL", "notaurl", "redis://"),
    ("POLLER_BILLIT__BASE_URL", "api.billit.be", "http:// or https:// URL with a host"),
    ("POLLER_LOG_LEVEL", "BOGUS", "one of CRITICAL, ERROR, WARNING, INFO, DEBUG"),
    ("POLLER_DATABASE_URL", "nosuchdb://poller", "sqlite or postgresql"),
]
#: More of the same, checked together in one run (every problem is named on the one line).
MORE_BAD_VALUES = [
    ("POLLER_TICK_SECONDS", "nan", "finite number"),
    ("POLLER_BACKOFF_MAX_SECONDS", "1e300", "at most 31622400"),
    ("POLLER_WEBHOOK_SECRET_GRACE", "0", "positive"),
    ("POLLER_AMILI_COLLECTION__AUTH_URL", "https:///token", "http:// or https:// URL with a host"),
    ("POLLER_AMILI_ARM__BASE_URL", "https://host:port/", "http:// or https:// URL with a host"),
    ("POLLER_BILLIT__TIMEOUT_SECONDS", "inf", "finite number"),
    ("POLLER_SINK_DATABASE_URL", "postgresql+nodriver://u@h/db", "unknown database driver"),
    ("POLLER_METRICS_ADDR", "every interface", "IP address or a host name"),
    ("POLLER_HOME", " ", "a directory path, not empty"),
    ("POLLER_RETENTION_EVENTS", "soon", "0 or forever"),
    ("POLLER_RETENTION_SNAPSHOTS_KEEP", "-5", "whole number"),
    ("POLLER_PRUNE_AT", "25:61", "HH:MM"),
    ("POLLER_BILLIT__RECONCILE_SECONDS", "7200", "needs POLLER_BILLIT__SWEEP_SECONDS set too"),
    ("POLLER_AMILI_ADA__DISCOVER_FILTER", "status eq 'x' or state eq 'y'", "cannot read comparison 1"),
]


@pytest.mark.parametrize(("var", "value", "expected"), BAD_VALUES)
def test_bad_value_is_one_line_naming_the_variable(env, tmp_path, var, value, expected):
    """Issue 9 #6: a bad value fails at start (not at the first dispatch or delivery), naming the variable."""
    env[var] = value
    line = assert_refused(poller(env, "items"), f"{var}: ", expected, tmp_path=tmp_path)
    if len(value) > 3:
        assert value not in line  # values may be secrets: never quoted


def test_every_bad_value_is_named_on_the_one_line(env, tmp_path):
    """Issue 9 #6: several bad values are all named at once, so one run finds them all."""
    env.update({var: value for var, value, _ in MORE_BAD_VALUES})
    line = assert_refused(poller(env, "items"), tmp_path=tmp_path)
    for var, value, expected in MORE_BAD_VALUES:
        assert f"{var}: " in line and expected in line, var
        if len(value) > 3:
            assert value not in line


def test_bad_account_override_is_named(env, tmp_path):
    """Issue 9 #6: a named account's override is checked at start, not at that account's first poll."""
    env["POLLER_BILLIT__ACCOUNTS__ACME__BASE_URL"] = "ftp://billit"
    assert_refused(poller(env, "items"), "POLLER_BILLIT__ACCOUNTS__ACME__BASE_URL: ",
                   "http:// or https:// URL with a host", tmp_path=tmp_path)


@pytest.mark.parametrize(("var", "suggestion"), [
    ("POLLER_TICKS_SECONDS", "POLLER_TICK_SECONDS"),
    ("POLLER_BILLIT__API_KY", "POLLER_BILLIT__API_KEY"),
    ("POLLER_BILIT__API_KEY", "POLLER_BILLIT__API_KEY"),
    ("POLLER_BILLIT__ACCOUNTS__ACME__PARTYID", "POLLER_BILLIT__ACCOUNTS__ACME__PARTY_ID"),
    ("poller_webhook_allow_htp", "POLLER_WEBHOOK_ALLOW_HTTP"),
])
def test_misspelt_variable_is_reported_with_the_closest_name(env, tmp_path, var, suggestion):
    """Issue 9 #6: a misspelt POLLER_* variable (a secret that silently does nothing) is an error."""
    env[var] = "s3cr3t-value"
    line = assert_refused(poller(env, "items"), var, f"did you mean {suggestion}?", tmp_path=tmp_path)
    assert "s3cr3t-value" not in line


def test_misspelt_variable_in_dotenv_is_reported(env, tmp_path):
    """Issue 9 #6: the .env file is checked like the environment."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text("POLLER_AMILI_ADA__API_COD=s3cr3t-value\nOTHER_TOOL=1\n")
    line = assert_refused(poller(env, "items", cwd=work), "POLLER_AMILI_ADA__API_COD",
                          "did you mean POLLER_AMILI_ADA__API_CODE?", tmp_path=tmp_path)
    assert "s3cr3t-value" not in line


def test_known_nested_and_account_variables_are_accepted(env, tmp_path):
    """Issue 9 #6: the check knows provider settings and named accounts (no false alarms)."""
    env.update({"POLLER_BILLIT__API_KEY": "k", "POLLER_BILLIT__ACCOUNTS__ACME__API_KEY": "k2",
                "POLLER_AMILI_ARM__BASE_URL": "https://arm.example", "POLLER_WEBHOOK_DISABLE_AFTER": "12h",
                "POLLER_LOG_LEVEL": "warning", "POLLER_BROKER_URL": "redis://127.0.0.1:1/3"})
    proc = poller(env, "migrate")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("command", [("items",), ("track", "billit", "1001"), ("worker",), ("beat",), ("run",)])
def test_every_entry_point_refuses_bad_settings(env, tmp_path, command):
    """Issue 9 #6: `poller run`, `worker`, `beat` and every command stop at once; nothing starts."""
    env["POLLER_LEASE_SECONDS"] = "inf"
    env["POLLER_BROKER_URL"] = "redis://127.0.0.1:1/0"
    assert_refused(poller(env, *command), "POLLER_LEASE_SECONDS", tmp_path=tmp_path)


@pytest.mark.parametrize("command", [("worker",), ("beat",)])
def test_broker_url_that_is_not_a_url_is_refused_by_the_daemons(env, tmp_path, command):
    """Issue 9 #6: POLLER_BROKER_URL=notaurl used to retry forever; now one line, exit 2."""
    env["POLLER_BROKER_URL"] = "notaurl"
    assert_refused(poller(env, *command), "POLLER_BROKER_URL", "redis://", tmp_path=tmp_path)


def test_unreachable_database_is_one_line_without_the_password(env):
    """Issue 9 #6: a database that cannot be reached is one line (no traceback), its password masked."""
    from cryptography.fernet import Fernet

    env["POLLER_DATABASE_URL"] = "postgresql+psycopg://poller:hunter2secret@127.0.0.1:1/poller"
    env["POLLER_SECRET_KEYS"] = Fernet.generate_key().decode()  # a shared database needs its key
    proc = poller(env, "items")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot use the database (POLLER_DATABASE_URL)")
    assert "hunter2secret" not in proc.stderr
