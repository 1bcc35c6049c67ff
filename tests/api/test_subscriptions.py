"""`/v1/subscriptions` and `/v1/deliveries` over real HTTP, on SQLite and PostgreSQL, with real
polls of the simulator and real deliveries to a verifying receiver."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from config.wiring import build_api, build_delivery, build_service
from tests.apiserver import ApiServer, Client
from tests.receiver import Receiver
from tests.stack import VALIDATOR
from worker.store.deliveries import matches
from worker.store.models import Subscription

#: These check the HTTP layer only (auth, messages, routing), which does not differ by database;
#: the database-backed behaviour runs on both.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)



def _item(api, sim, **fields) -> tuple[int, int]:
    """A tracked Billit order: (its simulator ref, its item id)."""
    ref = sim.billit.create_order()
    r = api.client().post("/v1/items", json={"provider": "billit", "ref": str(ref), **fields})
    assert r.status_code == 201, r.text
    return ref, r.json()["id"]


def _poll(api, service, *item_ids: int) -> None:
    """Make the items due (poll now) and poll them once, as a dispatch tick would."""
    for item_id in item_ids:
        assert api.client().post(f"/v1/items/{item_id}/poll").status_code == 202
    assert service.dispatch_due(service.poll_claims, lease_s=30, limit=100, chunk_size=100) == len(item_ids)


def _deliver_all(delivery) -> None:
    """Deliver until nothing is due now (retries due at once are sent too)."""
    deadline = time.monotonic() + 30
    while delivery.dispatch_due(delivery.deliver, lease_s=60, limit=1000, chunk_size=100):
        assert time.monotonic() < deadline, "deliveries kept coming due"


def _subscribe(api, url: str, **filters) -> dict:
    r = api.client().post("/v1/subscriptions", json={"url": url, **filters})
    assert r.status_code == 201, r.text
    return r.json()


def _invalid(r, name: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    names = [p["name"] for p in r.json()["invalid_params"]]
    assert any(n == name or n.startswith(name + ".") for n in names), names


def test_create_list_get_patch_delete(api, receiver):
    """The secret comes back once, on create; list and get never show it."""
    c = api.client()
    created = _subscribe(api, receiver.url, types=["status.changed"], providers=["billit"],
                         labels={"customer": "acme"})
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["event_types"] == ["status.changed"] and created["providers"] == ["billit"]
    assert created["labels"] == {"customer": "acme"} and created["state"] == "active"
    listed = c.get("/v1/subscriptions")
    assert listed.status_code == 200 and secret not in listed.text and "secret\"" not in listed.text
    assert [s["id"] for s in listed.json()["data"]] == [created["id"]]
    assert listed.json()["data"][0]["deliveries"] == {}
    one = c.get(f"/v1/subscriptions/{created['id']}")
    assert one.status_code == 200 and secret not in one.text
    assert one.json()["labels"] == {"customer": "acme"}

    r = c.patch(f"/v1/subscriptions/{created['id']}", json={"types": None, "labels": {"customer": "globex"},
                                                           "enabled": False})
    assert r.status_code == 200, r.text
    assert r.json()["event_types"] is None and r.json()["providers"] == ["billit"]  # left out: unchanged
    assert r.json()["labels"] == {"customer": "globex"} and r.json()["state"] == "disabled"
    r = c.patch(f"/v1/subscriptions/{created['id']}", json={"enabled": True, "url": receiver.url + "?v=2",
                                                           "event_types": ["item.gone"]})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "active" and r.json()["url"].endswith("?v=2")
    assert r.json()["event_types"] == ["item.gone"]
    assert secret not in r.text

    assert c.delete(f"/v1/subscriptions/{created['id']}").status_code == 204
    gone = c.get(f"/v1/subscriptions/{created['id']}")
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"
    assert c.delete(f"/v1/subscriptions/{created['id']}").status_code == 404
    assert c.get("/v1/subscriptions").json()["data"] == []


@SQLITE_ONLY
def test_same_url_and_filters_twice_is_a_conflict_naming_url(api, receiver):
    c = api.client()
    first = _subscribe(api, receiver.url, labels={"customer": "acme"})
    again = c.post("/v1/subscriptions", json={"url": receiver.url, "labels": {"customer": "acme"}})
    assert again.status_code == 409, again.text
    assert again.json()["invalid_params"][0]["name"] == "url"
    assert f"subscription {first['id']} already sends the same events" in again.json()["detail"]
    other = _subscribe(api, receiver.url, labels={"customer": "globex"})  # other filters: another subscription
    clash = c.patch(f"/v1/subscriptions/{other['id']}", json={"labels": {"customer": "acme"}})
    assert clash.status_code == 409 and clash.json()["invalid_params"][0]["name"] == "url"
    assert c.get(f"/v1/subscriptions/{other['id']}").json()["labels"] == {"customer": "globex"}
    assert len(c.get("/v1/subscriptions").json()["data"]) == 2


@SQLITE_ONLY
def test_read_only_key_reads_but_does_not_write(api, receiver):
    sub = _subscribe(api, receiver.url)
    ro = api.client(api.read_key)
    assert ro.get("/v1/subscriptions").status_code == 200
    assert ro.get("/v1/deliveries").status_code == 200
    for method, path, body in (("post", "/v1/subscriptions", {"url": receiver.url + "?x"}),
                               ("patch", f"/v1/subscriptions/{sub['id']}", {"enabled": False}),
                               ("delete", f"/v1/subscriptions/{sub['id']}", None),
                               ("post", f"/v1/subscriptions/{sub['id']}/rotate-secret", None),
                               ("post", f"/v1/subscriptions/{sub['id']}/test", None),
                               ("post", f"/v1/subscriptions/{sub['id']}/recover", {"since": "2026-01-01T00:00Z"})):
        r = getattr(ro, method)(path, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert receiver.received == []
    assert api.client().get(f"/v1/subscriptions/{sub['id']}").json()["state"] == "active"


@SQLITE_ONLY
@pytest.mark.parametrize(("body", "field"), [
    ({"url": "https://hooks.example.com/x", "types": ["status.changed", "nope"]}, "types"),
    ({"url": "https://hooks.example.com/x", "providers": ["acme"]}, "providers"),
    ({"url": "https://hooks.example.com/x", "labels": {"bad key": "x"}}, "labels"),
    ({"url": "https://hooks.example.com/x", "labels": {"k": 5}}, "labels"),
    ({"url": "ftp://hooks.example.com/x"}, "url"),
    ({"url": "https://hooks.example.com/x", "secret": "mine"}, "secret"),
    ({"types": ["status.changed"]}, "url"),
])
def test_bad_subscription_input_names_the_field(api, body, field):
    c = api.client()
    _invalid(c.post("/v1/subscriptions", json=body), field)
    assert c.get("/v1/subscriptions").json()["data"] == []


@SQLITE_ONLY
def test_bad_query_and_patch_input_names_the_field(api, receiver):
    c = api.client()
    sub = _subscribe(api, receiver.url)
    _invalid(c.get("/v1/deliveries", params={"status": "lost"}), "status")
    assert "pending, succeeded, failed" in c.get("/v1/deliveries", params={"status": "lost"}).json()["detail"]
    _invalid(c.get("/v1/deliveries", params={"cursor": "bm90LWEtY3Vyc29y"}), "cursor")
    _invalid(c.get("/v1/deliveries", params={"event_id": "evt_nothing"}), "event_id")
    _invalid(c.get("/v1/deliveries", params={"subscription_id": sub["id"] + 1}), "subscription_id")
    _invalid(c.get("/v1/deliveries", params={"limit": 0}), "limit")
    _invalid(c.patch(f"/v1/subscriptions/{sub['id']}", json={"types": ["nope"]}), "types")
    _invalid(c.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": "maybe"}), "enabled")
    _invalid(c.patch(f"/v1/subscriptions/{sub['id']}", json={"url": "gopher://x"}), "url")
    _invalid(c.post(f"/v1/subscriptions/{sub['id']}/recover", json={"since": "last tuesday"}), "since")
    assert c.patch("/v1/subscriptions/999", json={"enabled": False}).status_code == 404
    assert c.post("/v1/subscriptions/999/test").status_code == 404
    assert c.get(f"/v1/subscriptions/{sub['id']}").json()["event_types"] is None  # nothing changed


def test_labelled_subscription_gets_only_the_matching_items_events(api, sim, receiver):
    """A subscription with labels gets the events of items carrying them, and no others."""
    acme_ref, acme = _item(api, sim, labels={"customer": "acme", "tier": "gold"}, external_id="inv-1")
    globex_ref, globex = _item(api, sim, labels={"customer": "globex"})
    labelled = _subscribe(api, receiver.url, labels={"customer": "acme"})
    receiver.secrets = [labelled["secret"]]
    everyone = Receiver().start()
    try:
        everyone.secrets = [_subscribe(api, everyone.url)["secret"]]
        service, delivery = build_service(api.settings), build_delivery(api.settings)
        _poll(api, service, acme, globex)
        sim.billit.set_stage(acme_ref, 1)
        sim.billit.set_stage(globex_ref, 1)
        _poll(api, service, acme, globex)
        _deliver_all(delivery)
        got = receiver.wait_for(2)
        assert {r.json["item_id"] for r in got} == {acme} and [r.json["seq"] for r in got] == [1, 2]
        assert all(r.verified_with == [0] for r in got)
        assert got[0].json["data"]["labels"] == {"customer": "acme", "tier": "gold"}
        assert got[0].json["data"]["external_id"] == "inv-1"
        assert len(everyone.wait_for(4)) == 4
        assert {r.json["item_id"] for r in everyone.received} == {acme, globex}
        deliveries = api.client().get("/v1/deliveries", params={"subscription_id": labelled["id"]}).json()["data"]
        assert len(deliveries) == 2 and {d["item_id"] for d in deliveries} == {acme}
    finally:
        everyone.stop()
    assert len(receiver.received) == 2


@pytest.mark.parametrize(("labels", "event_labels", "wanted"), [
    (None, None, True),
    ({"customer": "acme"}, {"customer": "acme", "tier": "gold"}, True),
    ({"customer": "acme", "tier": "gold"}, {"customer": "acme"}, False),
    ({"customer": "acme"}, {"customer": "globex"}, False),
    ({"customer": "acme"}, None, False),  # a system event: no item, no labels
])
def test_matches_needs_every_label(labels, event_labels, wanted):
    sub = Subscription(event_types=None, providers=None, labels=labels)
    assert matches(sub, "status.changed", "billit", event_labels) is wanted


def test_test_event_is_signed_sent_now_and_not_stored(api, receiver):
    c = api.client()
    sub = _subscribe(api, receiver.url, types=["item.gone"])  # filters do not apply to a test
    receiver.secrets = [sub["secret"]]
    r = c.post(f"/v1/subscriptions/{sub['id']}/test")
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["ok"] is True and result["status_code"] == 200 and result["error"] is None
    assert result["latency_ms"] >= 0 and result["response_excerpt"] == '{"ok": true}'
    (got,) = receiver.wait_for(1)
    assert got.verified_with == [0]
    assert got.webhook_id == result["webhook_id"] == got.json["id"]
    assert got.json["type"] == "test" and got.json["item_id"] is None and got.json["seq"] is None
    assert got.json["data"]["subscription_id"] == sub["id"] and got.json["data"]["message"]
    VALIDATOR.validate(got.json)
    # Not in the event stream, and no delivery or health change.
    assert c.get("/v1/events").json()["data"] == []
    assert c.get("/v1/deliveries").json()["data"] == []
    after = c.get(f"/v1/subscriptions/{sub['id']}").json()
    assert after["deliveries"] == {} and after["last_success_at"] is None

    receiver.plan(503)
    failed = c.post(f"/v1/subscriptions/{sub['id']}/test").json()
    assert failed["ok"] is False and failed["status_code"] == 503
    assert c.get(f"/v1/subscriptions/{sub['id']}").json()["failing_since"] is None


@SQLITE_ONLY
def test_rotated_secret_signs_beside_the_old_one(api, receiver):
    c = api.client()
    sub = _subscribe(api, receiver.url)
    r = c.post(f"/v1/subscriptions/{sub['id']}/rotate-secret")
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new.startswith("whsec_") and new != sub["secret"]
    until = datetime.fromisoformat(r.json()["previous_secret_expires_at"])
    assert abs(until - (datetime.now(UTC) + timedelta(seconds=24 * 3600))) < timedelta(minutes=1)
    assert new not in c.get("/v1/subscriptions").text
    receiver.secrets = [sub["secret"], new]
    assert c.post(f"/v1/subscriptions/{sub['id']}/test").json()["ok"] is True
    assert receiver.wait_for(1)[0].verified_with == [0, 1]


@SQLITE_ONLY
def test_test_to_a_url_the_rules_now_refuse_is_a_conflict(api, receiver):
    """A subscription stored while private targets were allowed, tested by an API that refuses them."""
    sub = _subscribe(api, receiver.url)
    strict = ApiServer(build_api(api.settings.model_copy(update={"webhook_allow_private": False}))).start()
    try:
        r = Client(strict.url, api.key).post(f"/v1/subscriptions/{sub['id']}/test")
    finally:
        strict.stop()
    assert r.status_code == 409, r.text
    assert r.json()["invalid_params"][0]["name"] == "url"
    assert "POLLER_WEBHOOK_ALLOW_PRIVATE" in r.json()["detail"]
    assert receiver.arrivals == []


def test_recover_resends_what_failed_in_order_with_the_same_webhook_id(api, sim, receiver):
    c = api.client()
    ref, item = _item(api, sim)
    sub = _subscribe(api, receiver.url)
    receiver.secrets = [sub["secret"]]
    service = build_service(api.settings)
    # One retry, at once: a delivery fails for good on its second failed attempt.
    delivery = build_delivery(api.settings.model_copy(update={"webhook_retry_schedule": "0"}))
    started = datetime.now(UTC) - timedelta(seconds=1)
    _poll(api, service, item)
    for stage in (1, 2):
        sim.billit.set_stage(ref, stage)
        _poll(api, service, item)
    events = [e["id"] for e in c.get("/v1/events", params={"item_id": item}).json()["data"]]
    assert len(events) == 3
    receiver.plan(500, times=6)
    _deliver_all(delivery)
    assert len(receiver.received) == 6 and receiver.ok() == []
    failed = c.get("/v1/deliveries", params={"subscription_id": sub["id"], "status": "failed"}).json()["data"]
    assert [d["event_id"] for d in failed] == events[::-1]  # newest first
    assert all([a["outcome"] for a in d["attempts"]] == ["retry", "failed"] for d in failed)
    assert all(d["attempts"][0]["status_code"] == 500 for d in failed)

    later = c.post(f"/v1/subscriptions/{sub['id']}/recover",
                   json={"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
    assert later.status_code == 200 and later.json() == {"queued": 0}
    r = c.post(f"/v1/subscriptions/{sub['id']}/recover", json={"since": started.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json() == {"queued": 3}
    _deliver_all(delivery)
    ok = receiver.ok()
    assert [x.webhook_id for x in ok] == events and [x.json["seq"] for x in ok] == [1, 2, 3]
    assert all(x.verified_with == [0] for x in ok)
    # Delivered now: recovering again sends nothing twice.
    assert c.post(f"/v1/subscriptions/{sub['id']}/recover", json={"since": started.isoformat()}).json() == \
        {"queued": 0}
    counts = c.get(f"/v1/subscriptions/{sub['id']}").json()["deliveries"]
    assert counts == {"failed": 3, "succeeded": 3}


@SQLITE_ONLY
def test_recover_on_a_disabled_subscription_is_a_conflict(api, receiver):
    c = api.client()
    sub = _subscribe(api, receiver.url)
    c.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False})
    r = c.post(f"/v1/subscriptions/{sub['id']}/recover", json={"since": "2026-01-01T00:00:00"})
    assert r.status_code == 409 and "enable it first" in r.json()["detail"]


def test_deliveries_list_with_attempts_filters_and_cursor(api, sim, receiver):
    c = api.client()
    ref, item = _item(api, sim)
    first = _subscribe(api, receiver.url)
    second = _subscribe(api, receiver.url + "?second=1")
    receiver.secrets = [first["secret"], second["secret"]]
    service, delivery = build_service(api.settings), build_delivery(api.settings)
    _poll(api, service, item)
    sim.billit.set_stage(ref, 1)
    _poll(api, service, item)
    events = [e["id"] for e in c.get("/v1/events").json()["data"]]
    assert len(events) == 2
    pending = c.get("/v1/deliveries", params={"status": "pending"}).json()["data"]
    assert len(pending) == 4 and all(d["attempts"] == [] for d in pending)
    _deliver_all(delivery)
    receiver.wait_for(4)

    everything = c.get("/v1/deliveries").json()
    ids = [d["id"] for d in everything["data"]]
    assert len(ids) == 4 and ids == sorted(ids, reverse=True) and everything["next_cursor"] is None
    one = everything["data"][0]
    assert one["state"] == "succeeded" and one["next_attempt_at"] is None and one["event_type"].startswith("status.")
    assert [(a["status_code"], a["outcome"]) for a in one["attempts"]] == [(200, "success")]
    assert one["attempts"][0]["latency_ms"] >= 0 and one["attempts"][0]["attempted_at"].endswith("Z")

    seen, cursor = [], None
    while True:
        page = c.get("/v1/deliveries", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids

    by_event = c.get("/v1/deliveries", params={"event_id": events[0]}).json()["data"]
    assert {d["subscription_id"] for d in by_event} == {first["id"], second["id"]}
    assert all(d["event_id"] == events[0] for d in by_event)
    by_sub = c.get("/v1/deliveries", params={"subscription_id": second["id"], "status": "succeeded"}).json()["data"]
    assert [d["event_id"] for d in by_sub] == events[::-1]
    assert c.get("/v1/deliveries", params={"status": "failed"}).json()["data"] == []
