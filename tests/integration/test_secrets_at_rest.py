"""Issue 9 #15: secrets at rest. Webhook secrets and Billit's tokens are stored encrypted, with key
rotation; the data directory, the key file and the SQLite files are private to their owner."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from tests.integration.conftest import billit_oauth_settings, poll_due, provider_service
from tests.stack import Stack
from worker.errors import ConfigurationError
from worker.store import crypto
from worker.store.credentials import DbCredentialStore
from worker.store.db import create_database, drop_database, make_engine, make_sessionmaker, sqlite_url
from worker.store.migrate import alembic_config, upgrade
from worker.store.models import Subscription

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys():
    """Two keys, the process keyring holding only the first; restored by conftest after the test."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    crypto.install(crypto.Keyring([old]))
    return old, new


def raw(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def poller(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update({"POLLER_HOME": str(tmp_path / "var"), **extra})
    return env


def test_webhook_secrets_are_encrypted_and_still_sign(engine, sim, clock, receiver, keys):
    """Issue 9 #15: subscriptions.secret and previous_secret hold no plaintext (raw SQL); deliveries
    are still signed with both during the grace period and verify with the reference library."""
    stack = Stack(engine, sim, clock)
    sub, first = stack.subs.add(receiver.url)
    second = stack.subs.rotate_secret(sub.id, timedelta(hours=1))
    [(secret, previous)] = raw(engine, f"SELECT secret, previous_secret FROM subscriptions WHERE id = {sub.id}")
    for stored, plain in ((secret, second), (previous, first)):
        assert stored.startswith(crypto.PREFIX) and plain not in stored and plain.removeprefix("whsec_") not in stored
    receiver.secrets = [second, first]
    stack.orders(1, stages=0)
    assert stack.deliver() == 1
    [got] = receiver.wait_for(1)
    assert got.verified_with == [0, 1]


def test_billit_tokens_are_encrypted_and_still_used(engine, oauth_sim, wall):
    """Issue 9 #15: the rotated refresh token and the access token are stored encrypted, and a
    restarted worker reads them back (no second refresh while the access token is valid)."""
    service = provider_service(engine, wall, billit_oauth_settings(oauth_sim))
    oauth_sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    poll_due(service)
    stored = DbCredentialStore(make_sessionmaker(engine)).load("billit:default")
    assert stored is not None and stored.access_token and stored.refresh_token == oauth_sim.billit.current_refresh_token
    [(refresh, access)] = raw(engine, "SELECT refresh_token, access_token FROM credentials")
    for value, plain in ((refresh, stored.refresh_token), (access, stored.access_token)):
        assert value.startswith(crypto.PREFIX) and plain not in value
    wall.advance(6)
    restarted = provider_service(engine, wall, billit_oauth_settings(oauth_sim))
    poll_due(restarted)
    assert oauth_sim.billit.refreshes_ok == 1 and [i.last_error for i in restarted.items()] == [None]


def test_wrong_key_is_a_clear_configuration_error(engine, keys):
    """Issue 9 #15: reading a secret without its key raises ConfigurationError naming
    POLLER_SECRET_KEYS, never an empty value; the secret is not in the message."""
    store = DbCredentialStore(make_sessionmaker(engine))
    store.seed("billit:default", "refresh-PLAIN-91", "fp", datetime.now(UTC))
    crypto.install(crypto.Keyring([keys[1]]))
    with pytest.raises(ConfigurationError, match="POLLER_SECRET_KEYS") as err:
        store.load("billit:default")
    assert "refresh-PLAIN-91" not in str(err.value) and keys[0] not in str(err.value)
    crypto.install(crypto.Keyring([keys[1], keys[0]]))
    assert store.load("billit:default").refresh_token == "refresh-PLAIN-91"


def test_rotate_key_reencrypts_so_the_old_key_can_go(db_url, tmp_path, keys):
    """Issue 9 #15: `poller secrets rotate-key` with the new key first re-encrypts every secret;
    afterwards the new key alone reads them."""
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    DbCredentialStore(sessions).seed("billit:default", "refresh-R1", "fp", datetime.now(UTC))
    with sessions.begin() as s:
        s.add(Subscription(kind="webhook", url="https://h.example/x", secret="whsec_c2VjcmV0",
                           previous_secret="whsec_b2xk", state="active", created_at=datetime.now(UTC),
                           updated_at=datetime.now(UTC)))
    before = raw(engine, "SELECT secret, previous_secret FROM subscriptions")
    old, new = keys
    # The old key dropped too early: one line naming the setting, nothing rewritten.
    proc = poller(cli_env(tmp_path, POLLER_DATABASE_URL=db_url, POLLER_SECRET_KEYS=new), "secrets", "rotate-key")
    [line] = proc.stderr.splitlines()
    assert proc.returncode != 0 and line.startswith("error: ") and "POLLER_SECRET_KEYS" in line
    assert raw(engine, "SELECT secret, previous_secret FROM subscriptions") == before
    proc = poller(cli_env(tmp_path, POLLER_DATABASE_URL=db_url, POLLER_SECRET_KEYS=f"{new},{old}"),
                  "secrets", "rotate-key")
    assert proc.returncode == 0, proc.stderr
    assert "re-encrypted 3 " in proc.stdout
    assert raw(engine, "SELECT secret, previous_secret FROM subscriptions") != before
    crypto.install(crypto.Keyring([new]))
    assert DbCredentialStore(sessions).load("billit:default").refresh_token == "refresh-R1"
    with sessions.begin() as s:
        sub = s.scalar(select(Subscription))
        assert (sub.secret, sub.previous_secret) == ("whsec_c2VjcmV0", "whsec_b2xk")
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path, pg_admin_url):
    """An empty database of each kind, not migrated."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "legacy.db")
        return
    if not pg_admin_url:
        from tests.conftest import missing

        missing("PostgreSQL (TEST_DATABASE_URL)")
    url = create_database(pg_admin_url, f"poller_test_{uuid.uuid4().hex[:12]}")
    try:
        yield url
    finally:
        drop_database(pg_admin_url, url)


def test_migration_encrypts_legacy_plaintext(empty_url, keys):
    """Issue 9 #15: rows written in clear before the upgrade are encrypted by migration 0006 and
    read back unchanged."""
    from alembic.script import ScriptDirectory

    previous = ScriptDirectory.from_config(alembic_config()).get_revision("0006").down_revision
    engine = make_engine(empty_url)
    upgrade(engine, previous)
    now = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO subscriptions (id, kind, url, state, secret, previous_secret, created_at, "
                          "updated_at) VALUES (1, 'webhook', 'https://h.example/x', 'active', 'whsec_bGVnYWN5', "
                          "NULL, :now, :now)"), {"now": now})
        conn.execute(text("INSERT INTO credentials (key, refresh_token, access_token, updated_at) "
                          "VALUES ('billit:default', 'legacy-refresh', 'legacy-access', :now)"), {"now": now})
    upgrade(engine)
    rows = raw(engine, "SELECT secret, previous_secret FROM subscriptions") + raw(
        engine, "SELECT refresh_token, access_token FROM credentials")
    assert rows[0][1] is None
    assert all(v.startswith(crypto.PREFIX) and "legacy" not in v for v in (rows[0][0], *rows[1]))
    stored = DbCredentialStore(make_sessionmaker(engine)).load("billit:default")
    assert (stored.refresh_token, stored.access_token) == ("legacy-refresh", "legacy-access")
    with make_sessionmaker(engine).begin() as s:
        assert s.scalar(select(Subscription.secret)) == "whsec_bGVnYWN5"
    engine.dispose()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_home_is_private(tmp_path):
    """Issue 9 #15: on the embedded defaults the data directory is 0700 and the generated key file
    and the SQLite database 0600 (umask 022), with no manual step; the key is made once."""
    previous = os.umask(0o022)
    try:
        env = cli_env(tmp_path, POLLER_WEBHOOK_ALLOW_HTTP="true", POLLER_WEBHOOK_ALLOW_PRIVATE="true")
        assert poller(env, "migrate").returncode == 0
        added = poller(env, "webhooks", "add", "http://127.0.0.1:9/hook")
        assert added.returncode == 0, added.stderr
        home = tmp_path / "var"
        assert (mode(home), mode(home / "secret.key"), mode(home / "poller.db")) == (0o700, 0o600, 0o600)
        key = (home / "secret.key").read_text()
        listed = poller(env, "webhooks", "list")
        assert listed.returncode == 0 and "http://127.0.0.1:9/hook" in listed.stdout
        assert (home / "secret.key").read_text() == key
        # The WAL and shared-memory files exist while a connection is open.
        engine = make_engine(sqlite_url(tmp_path / "data" / "x.db"))
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.commit()
            files = [tmp_path / "data" / n for n in ("x.db", "x.db-wal", "x.db-shm")]
            assert [mode(f) for f in files] == [0o600] * 3
        assert mode(tmp_path / "data") == 0o700
        engine.dispose()
    finally:
        os.umask(previous)


def test_bad_or_missing_keys_are_one_clear_line(tmp_path, keys):
    """Issue 9 #15: a malformed POLLER_SECRET_KEYS, or none for a shared (non-SQLite) database,
    is one line naming POLLER_SECRET_KEYS, without echoing the value."""
    env = cli_env(tmp_path, POLLER_SECRET_KEYS="not-a-fernet-key")
    proc = poller(env, "items")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: ") and "POLLER_SECRET_KEYS" in line and "not-a-fernet-key" not in line
    with pytest.raises(ConfigurationError, match="POLLER_SECRET_KEYS is not set"):
        crypto.keyring_from(None, tmp_path / "nowhere" / "secret.key", create=False)
    assert not (tmp_path / "nowhere").exists()
