"""/healthz, /readyz and the status page (GET /) over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import text

from tests.apiserver import ApiServer, Client
from worker.store.db import sqlite_file

#: These check the HTTP layer only (auth, messages, routing), which does not differ by database;
#: the database-backed behaviour runs on both.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)



def serve(settings, **changes) -> ApiServer:
    """Another API on the same database, with some settings changed."""
    from config.wiring import build_api

    return ApiServer(build_api(settings.model_copy(update=changes))).start()


def beat(settings, age_s: float = 0.0) -> None:
    """A dispatch heartbeat, as `poller beat` records it each tick, ``age_s`` seconds old."""
    from config.wiring import sessions_for
    from worker.clock import utcnow
    from worker.status import record_heartbeat

    with sessions_for(settings).begin() as s:
        record_heartbeat(s, "dispatch", at=utcnow() - timedelta(seconds=age_s), seconds=0.05, claimed=0)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failing(r: requests.Response) -> list[str]:
    return r.json()["failing"]


# -- /healthz and /readyz ----------------------------------------------------------------------

def test_ready_when_database_broker_and_heartbeat_are_there(api, broker_url):
    beat(api.settings)
    server = serve(api.settings, broker_url=broker_url)
    try:
        r = requests.get(server.url + "/readyz", timeout=10)
    finally:
        server.stop()
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok" and failing(r) == []
    assert {c["name"]: c["ok"] for c in r.json()["checks"]} == {"database": True, "broker": True, "beat": True}


@SQLITE_ONLY
def test_not_ready_without_a_dispatch_heartbeat(api):
    c = api.client(None)
    r = c.get("/readyz")
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert failing(r) == ["beat"] and "beat" in r.json()["detail"]
    beat(api.settings, age_s=3600)  # a beat that stopped an hour ago
    r = c.get("/readyz")
    assert r.status_code == 503 and failing(r) == ["beat"] and "3600" in str(r.json()["checks"])
    beat(api.settings)
    assert c.get("/readyz").status_code == 200


@SQLITE_ONLY
def test_not_ready_when_the_broker_is_down(api):
    beat(api.settings)
    server = serve(api.settings, broker_url=f"redis://127.0.0.1:{unused_port()}/0")
    try:
        r = requests.get(server.url + "/readyz", timeout=10)
    finally:
        server.stop()
    assert r.status_code == 503 and failing(r) == ["broker"], r.text
    assert r.json()["detail"] == "not ready: broker" and r.json()["title"] == "Service Unavailable"


def test_healthz_answers_without_a_database_and_readyz_names_it(api):
    """SQLite: the file is deleted under the running API. PostgreSQL: the API points at a server
    that is down. /healthz does not notice (it touches nothing); /readyz says `database`."""
    beat(api.settings)
    path = sqlite_file(api.settings.resolved_database_url())
    server = api
    if path is not None:
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            name.unlink(missing_ok=True)
    else:
        server = serve(api.settings, database_url=f"postgresql+psycopg://poller:poller@127.0.0.1:{unused_port()}/x")
    try:
        started = time.monotonic()
        r = requests.get(server.url + "/healthz", timeout=10)
        took = time.monotonic() - started
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        assert took < 0.5, took
        r = requests.get(server.url + "/readyz", timeout=10)
        assert r.status_code == 503 and failing(r) == ["database"], r.text
        assert r.json()["detail"] == "not ready: database"
    finally:
        if server is not api:
            server.stop()
    assert path is None or not path.exists()  # nothing made an empty database in its place


def test_neither_health_route_migrates(api, engine):
    """A database one revision behind stays so: the API never changes the schema under a worker."""
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0006'"))
    beat(api.settings)
    c = api.client(None)
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code in (200, 503)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0006"


# -- the status page ---------------------------------------------------------------------------

@SQLITE_ONLY
@pytest.mark.parametrize("path", ["/", "/status.json"])
def test_status_page_needs_a_key(api, path):
    for key in (None, "spk_wrong"):
        r = api.client(key).get(path)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Basic")  # so a browser asks for it
    assert api.client().get(path).status_code == 200
    assert api.client(api.read_key).get(path).status_code == 200
    basic = requests.get(api.url + path, auth=("anyone", api.read_key), timeout=10)
    assert basic.status_code == 200
    assert requests.get(api.url + path, auth=("anyone", "spk_wrong"), timeout=10).status_code == 401


@SQLITE_ONLY
def test_status_page_shows_the_poller(api, sim):
    c = api.client()
    ref = str(sim.billit.create_order())
    assert c.post("/v1/items", json={"provider": "billit", "ref": ref}).status_code == 201
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert "<h1>status-poller</h1>" in r.text and "<td>billit</td>" in r.text
    data = c.get("/status.json").json()
    assert data["status"]["items"] == {"billit": {"active": 1}}


@SQLITE_ONLY
def test_public_status_page_needs_no_key(api):
    server = serve(api.settings, dashboard_public=True)
    try:
        for path in ("/", "/status.json"):
            assert Client(server.url, None).get(path).status_code == 200
        assert Client(server.url, None).get("/v1/items").status_code == 401  # only the page is public
    finally:
        server.stop()
