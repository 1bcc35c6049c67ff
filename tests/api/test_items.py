"""`/v1/items` over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest


def test_create_is_an_upsert_that_never_makes_a_second_row(api, sim):
    c = api.client()
    ref = str(sim.billit.create_order())
    first = c.post("/v1/items", json={"provider": "billit", "ref": ref, "labels": {"customer": "acme"},
                                      "external_id": "inv-1"})
    assert first.status_code == 201, first.text
    item = first.json()
    assert item["labels"] == {"customer": "acme"} and item["external_id"] == "inv-1"
    again = c.post("/v1/items", json={"provider": "billit", "ref": ref, "interval_seconds": 60,
                                      "labels": {"customer": "globex"}})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == item["id"]
    assert again.json()["interval_seconds"] == 60
    assert again.json()["labels"] == {"customer": "globex"}
    assert again.json()["external_id"] == "inv-1"  # left out: unchanged
    page = c.get("/v1/items").json()
    assert [i["id"] for i in page["data"]] == [item["id"]] and page["next_cursor"] is None
    assert c.get("/v1/items", params={"label": "customer:globex"}).json()["data"][0]["id"] == item["id"]
    assert c.get("/v1/items", params={"label": "customer:acme"}).json()["data"] == []


def test_batch_reports_one_result_per_input_and_stores_only_the_good_ones(api, sim):
    c = api.client()
    refs = [str(sim.billit.create_order()) for _ in range(3)]
    body = {"items": [
        {"provider": "billit", "ref": refs[0]},
        {"provider": "nope", "ref": "1"},
        {"provider": "billit", "ref": refs[1], "interval_seconds": 0.01},
        {"provider": "billit", "ref": refs[0], "labels": {"a": "b"}},
        {"provider": "billit", "ref": 5},
        {"provider": "billit", "ref": refs[2], "labels": {"bad key": "x"}},
        {"provider": "billit", "ref": refs[1]},
    ]}
    r = c.post("/v1/items/batch", json=body)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 7
    assert res[0]["created"] is True and res[3] == {"id": res[0]["id"], "created": False}
    assert res[6]["created"] is True
    assert res[1]["invalid_params"][0]["name"] == "items[1].provider"
    assert res[2]["invalid_params"][0]["name"] == "items[2].interval_seconds"
    assert "0.1 s to 31 days" in res[2]["detail"]
    assert res[4]["invalid_params"][0]["name"] == "items[4].ref"
    assert res[5]["invalid_params"][0]["name"].startswith("items[5].labels")
    assert r.json()["refused"] == 4
    stored = c.get("/v1/items").json()["data"]
    assert sorted(i["ref"] for i in stored) == sorted([refs[0], refs[1]])
    assert next(i for i in stored if i["ref"] == refs[0])["labels"] == {"a": "b"}


@pytest.mark.parametrize("key", ["none", "wrong"])
def test_no_or_wrong_key_is_401(api, key):
    c = api.client(None if key == "none" else "spk_wrong")
    r = c.get("/v1/items")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_read_only_key_cannot_write(api, sim):
    c = api.client(api.read_key)
    assert c.get("/v1/items").status_code == 200
    r = c.post("/v1/items", json={"provider": "billit", "ref": str(sim.billit.create_order())})
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    assert api.client().get("/v1/items").json()["data"] == []


def _poll_all(api) -> None:
    """One dispatch tick, polling in this process."""
    from config.wiring import build_service

    service = build_service(api.settings)
    service.dispatch_due(service.poll_claims, lease_s=30, limit=1000, chunk_size=100)


def test_following_next_cursor_visits_every_item_once_while_items_are_added(api, sim):
    c = api.client()
    refs = [str(sim.billit.create_order()) for _ in range(25)]
    r = c.post("/v1/items/batch", json={"items": [{"provider": "billit", "ref": ref} for ref in refs[:20]]})
    before = {x["id"] for x in r.json()["results"]}
    seen: list[int] = []
    cursor, added = None, 0
    while True:
        page = c.get("/v1/items", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [i["id"] for i in page["data"]]
        if added < 5:  # a new item between two pages
            c.post("/v1/items", json={"provider": "billit", "ref": refs[20 + added]})
            added += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))  # never twice
    assert before <= set(seen)  # every item that was there at the start
    assert len(seen) == 25  # and the ones added meanwhile (they come after the cursor)


def test_get_patch_snapshots_poll_and_delete(api, sim):
    c = api.client()
    ref = sim.billit.create_order()
    item = c.post("/v1/items", json={"provider": "billit", "ref": str(ref), "interval_seconds": 3600}).json()
    assert c.get(f"/v1/items/{item['id']}").json()["snapshot"] is None
    _poll_all(api)
    got = c.get(f"/v1/items/{item['id']}").json()
    assert got["snapshot"]["status"] == got["last_status"] == "to_send"
    sim.clock.advance(10)
    # The next poll is an hour away; "poll now" makes it due at once.
    r = c.post(f"/v1/items/{item['id']}/poll")
    assert r.status_code == 202 and r.json()["scheduled"] is True
    _poll_all(api)
    snaps = c.get(f"/v1/items/{item['id']}/snapshots", params={"limit": 1}).json()
    assert snaps["data"][0]["status"] == "pending_delivery" and snaps["next_cursor"]
    older = c.get(f"/v1/items/{item['id']}/snapshots", params={"limit": 1, "cursor": snaps["next_cursor"]}).json()
    assert older["data"][0]["status"] == "to_send" and older["next_cursor"] is None

    r = c.patch(f"/v1/items/{item['id']}", json={"paused": True, "labels": {"team": "ar"}, "interval_seconds": 60})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["labels"], r.json()["interval_seconds"]) == ("paused", {"team": "ar"}, 60)
    assert c.post(f"/v1/items/{item['id']}/poll").status_code == 409
    assert c.patch(f"/v1/items/{item['id']}", json={"paused": False}).json()["state"] == "active"

    assert c.delete(f"/v1/items/{item['id']}").status_code == 204
    assert c.get(f"/v1/items/{item['id']}").status_code == 404
    events = c.get("/v1/events", params={"item_id": item["id"]}).json()["data"]
    assert [e["data"]["status"] for e in events] == ["to_send", "pending_delivery"]  # events stay
    assert events[1]["data"]["labels"] == {}  # labels as they were when the event was made


def test_bad_input_names_the_field(api, sim):
    c = api.client()
    cases = [
        ({"provider": "billit", "ref": "1", "kind": "nope"}, "kind"),
        ({"provider": "billit", "ref": "1", "interval_seconds": 40 * 86400}, "interval_seconds"),
        ({"provider": "billit", "ref": "1", "labels": {"ok": "x" * 201}}, "labels.ok"),
        ({"provider": "billit", "ref": "1", "account": "other"}, "account"),
        ({"provider": "billit", "ref": "1", "extra": True}, "extra"),
        ({"ref": "1"}, "provider"),
    ]
    for body, field in cases:
        r = c.post("/v1/items", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["invalid_params"][0]["name"] == field, (body, r.json())
    assert c.get("/v1/items", params={"label": "nocolon"}).json()["invalid_params"][0]["name"] == "label"
    assert c.get("/v1/items", params={"cursor": "bm9wZQ"}).json()["invalid_params"][0]["name"] == "cursor"
    assert c.get("/v1/items", params={"state": "sleeping"}).json()["invalid_params"][0]["name"] == "state"
    assert c.get("/v1/items").json()["data"] == []  # nothing stored


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_reads_do_not_queue_behind_a_write(api, engine):
    """On SQLite the API's reads take no write lock: a worker holding a long write transaction
    does not hold up a page (before, every read began with BEGIN IMMEDIATE and waited for it)."""
    c = api.client()
    assert c.get("/v1/items").status_code == 200  # the key's once-a-minute `last used` write happens now
    with engine.connect() as conn, conn.begin():  # BEGIN IMMEDIATE: the write lock, held
        conn.exec_driver_sql("UPDATE items SET updated_at = updated_at")
        assert c.get("/v1/items", timeout=5).status_code == 200
        assert c.get("/v1/events", timeout=5).status_code == 200
        assert c.get("/v1/subscriptions", timeout=5).status_code == 200
