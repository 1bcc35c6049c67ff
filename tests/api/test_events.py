"""`/v1/events` over real HTTP, on SQLite and PostgreSQL: paging reaches every event exactly once,
in the order `poller events --json` prints, with and without filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Transaction

from tests.conftest import TEST_SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]


def cli_events(api) -> list[dict]:
    """What `poller events --json` prints for the API's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLLER_")}
    env.update(POLLER_HOME=str(api.settings.home), POLLER_DATABASE_URL=api.settings.database_url,
               POLLER_SECRET_KEYS=TEST_SECRET_KEY)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "events", "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def walk(client, limit: int, **params) -> list[dict]:
    """Follow next_cursor from the start until has_more is false; every page at most `limit`."""
    seen: list[dict] = []
    after = None
    for _ in range(1000):
        page = client.get("/v1/events", params={**params, "limit": limit, **({"after": after} if after else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["data"]) <= limit
        seen += body["data"]
        if body["data"]:
            assert body["next_cursor"] == body["data"][-1]["id"]
        after = body["next_cursor"]
        if not body["has_more"]:
            break
    else:
        pytest.fail("paging did not end")
    if after:  # the end is where to resume: nothing new, and the same cursor back
        again = client.get("/v1/events", params={**params, "limit": limit, "after": after}).json()
        assert again == {"data": [], "next_cursor": after, "has_more": False}
    return seen


def make_events(stack, sim) -> list[int]:
    """Four orders through two changes (12 status events), then one order the provider forgets."""
    ids = stack.orders(4, 2)
    with stack.sessions.begin() as s:
        from worker.store.models import Item

        gone_ref = s.get(Item, ids[2]).ref
    sim.faults.add("billit", "404", ref=gone_ref)
    stack.clock.advance(3600)
    stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=100, chunk_size=100)
    return ids


def test_paging_reaches_every_event_once_in_cli_order(api, stack, sim):
    ids = make_events(stack, sim)
    expected = cli_events(api)
    types = {e["type"] for e in expected}
    assert len(expected) > 12 and {"status.observed", "status.changed"} < types, types
    c = api.client(api.read_key)
    for limit in (1, 3, 1000):
        got = walk(c, limit)
        assert got == expected  # same events, same order, same content; none twice
    by_item = walk(c, 3, item_id=ids[1])
    assert by_item == [e for e in expected if e["item_id"] == ids[1]] and 3 <= len(by_item) < len(expected)
    changed = walk(c, 3, type="status.changed")
    assert changed == [e for e in expected if e["type"] == "status.changed"] and len(changed) >= 8
    other = sorted(types - {"status.observed", "status.changed"})
    assert other  # the forgotten order's event
    both = walk(c, 3, type=["status.observed", *other])
    assert both == [e for e in expected if e["type"] in {"status.observed", *other}] and len(both) > 4
    assert walk(c, 3, item_id=ids[1], type="status.changed") == [
        e for e in expected if e["item_id"] == ids[1] and e["type"] == "status.changed"]
    one = c.get(f"/v1/events/{expected[5]['id']}")
    assert one.status_code == 200 and one.json() == expected[5]


def test_paging_while_events_are_written_misses_none(api, stack, sim):
    """A client that pages, then comes back with its cursor after more events, gets only the new ones."""
    stack.orders(2, 1)
    c = api.client()
    first = walk(c, 3)
    stack.sim.clock.advance(10)
    stack.clock.advance(6)
    stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=100, chunk_size=100)
    later = c.get("/v1/events", params={"after": first[-1]["id"], "limit": 3}).json()
    assert later["data"] and later["has_more"] is False
    assert first + later["data"] == cli_events(api)


def test_events_carry_the_items_labels_and_external_id(api, sim):
    """An item created through the API with labels: each of its events says them."""
    from config.wiring import build_service

    c = api.client()
    ref = str(sim.billit.create_order())
    item = c.post("/v1/items", json={"provider": "billit", "ref": ref, "labels": {"customer": "acme", "tier": "gold"},
                                     "external_id": "inv-2026-0042"}).json()
    service = build_service(api.settings)
    for _ in range(2):
        assert c.post(f"/v1/items/{item['id']}/poll").status_code == 202
        service.dispatch_due(service.poll_claims, lease_s=30, limit=10, chunk_size=10)
        sim.clock.advance(10)
    events = c.get("/v1/events", params={"item_id": item["id"]}).json()["data"]
    assert [e["type"] for e in events] == ["status.observed", "status.changed"]
    for e in events:
        assert e["data"]["labels"] == {"customer": "acme", "tier": "gold"}
        assert e["data"]["external_id"] == "inv-2026-0042"
        assert e["data"]["ref"] == ref


@pytest.mark.parametrize(("params", "name"), [
    ({"after": "evt_01JDQ3Y7R4M5ZQ8N2C6V1B9XKP"}, "after"),
    ({"type": "status.teleported"}, "type"),
    ({"type": ["status.changed", "nope"]}, "type"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"item_id": "seven"}, "item_id"),
])
def test_bad_parameters_name_the_parameter(api, params, name):
    r = api.client().get("/v1/events", params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert [p["name"] for p in r.json()["invalid_params"]] == [name]


def test_unknown_event_is_404(api):
    r = api.client().get("/v1/events/evt_nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "evt_nope" in r.json()["detail"]


def test_events_need_a_key(api):
    assert api.client(None).get("/v1/events").status_code == 401


# -- out-of-order commits (PostgreSQL) -----------------------------------------------------

def _insert_event(conn, at) -> str:
    """One provider-level event written on ``conn`` (its position is taken now, at insert)."""
    from sqlalchemy import insert

    from worker.ids import event_id
    from worker.store.models import Event

    eid = event_id(at, os.urandom(10))
    conn.execute(insert(Event).values(id=eid, item_id=None, seq=None, type="provider.paused",
                                      data={"provider": "billit", "reason": "test"}, created_at=at))
    return eid


@contextmanager
def _open_hole(engine, now: Callable[[], datetime]) -> Iterator[tuple[str, str, str, Transaction]]:
    """Events ``first`` and ``later`` committed around ``late``, written by transaction ``tx``
    that stays open until the block ends: ``late``'s position is a hole while it is open."""
    with engine.begin() as conn:
        first = _insert_event(conn, now())
    with engine.connect() as pending:
        tx = pending.begin()
        late = _insert_event(pending, now())
        with engine.begin() as conn:
            later = _insert_event(conn, now())
        yield first, late, later, tx


#: SQLite commits one writer at a time, in position order: it has no holes to test.
POSTGRES_ONLY = pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)],
                                        indirect=True)


@POSTGRES_ONLY
def test_page_stops_before_an_event_still_being_committed(engine, clock):
    """Position N is taken by a transaction still open while N+1 commits: a page that handed out
    N+1 would make a client following its cursor miss N forever. It stops before N, and hands
    out both once N commits."""
    from worker.feed import EventFeed
    from worker.store.db import make_sessionmaker

    feed = EventFeed(make_sessionmaker(engine), clock=clock)
    with _open_hole(engine, clock) as (first, late, later, tx):
        rows, more = feed.page(after=None, limit=10)
        assert [e.id for e in rows] == [first] and more is False
        assert feed.page(after=first, limit=10)[0] == []
        tx.commit()
    rows, more = feed.page(after=first, limit=10)
    assert [e.id for e in rows] == [late, later] and more is False
    assert rows[0].position < rows[1].position


@POSTGRES_ONLY
def test_a_hole_older_than_the_grace_is_passed(engine, clock):
    """A transaction that never commits (rolled back, or stuck) holds the page only HOLE_GRACE_S."""
    from worker.feed import HOLE_GRACE_S, EventFeed
    from worker.store.db import make_sessionmaker

    feed = EventFeed(make_sessionmaker(engine), clock=clock)
    with _open_hole(engine, clock) as (first, _late, later, tx):
        clock.advance(HOLE_GRACE_S - 1)
        assert feed.page(after=first, limit=10)[0] == []
        clock.advance(2)
        assert [e.id for e in feed.page(after=first, limit=10)[0]] == [later]
        tx.rollback()
    assert feed.page(after=later, limit=10)[0] == []
    assert [e.id for e in feed.page(after=None, limit=10)[0]] == [first, later]


@POSTGRES_ONLY
def test_the_api_holds_its_page_at_an_open_insert(api, engine):
    """The same over HTTP, with the app's own (real) clock: written now, so inside the grace."""
    from worker.clock import utcnow

    c = api.client()
    with _open_hole(engine, utcnow) as (first, late, later, tx):
        page = c.get("/v1/events").json()
        assert [e["id"] for e in page["data"]] == [first] and page["next_cursor"] == first
        tx.commit()
    page = c.get("/v1/events", params={"after": first}).json()
    assert [e["id"] for e in page["data"]] == [late, later]
