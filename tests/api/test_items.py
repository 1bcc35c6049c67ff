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
