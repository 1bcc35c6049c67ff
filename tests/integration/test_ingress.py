"""Issue 14: provider pushes as triggers. The simulator pushes as the providers do (Billit signed, to
webhooks registered through its /v1/webhooks; Amili Norway on a path token) to the API's ingress
over real HTTP, on both databases. A believed push makes the item due now with its lease moved
on; the poll that follows writes the event, once. A push we do not believe polls nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from datetime import timedelta

import pytest
import requests
from prometheus_client import REGISTRY
from sqlalchemy import select

from config.settings import Settings
from config.wiring import build_api, providers_for
from tests.apiserver import ApiServer
from tests.conftest import TEST_SECRET_KEY
from tests.integration.conftest import LATE_S
from worker.ingress import Ingress
from worker.providers.amili_collection import AmiliCollectionSettings
from worker.providers.billit import BillitSettings
from worker.store.models import Event, Item
from worker.store.repo import Claim

SECRET = secrets.token_hex(32)
TOKEN = secrets.token_urlsafe(32)


def sign(body: bytes, secret: str = SECRET, at: float | None = None) -> str:
    """Billit-Signature as https://docs.billit.be/docs/verify-signature describes it."""
    t = int(time.time() if at is None else at)
    return f"t={t},s={hmac.new(secret.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def counted(provider: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("poller_ingress_total", {"provider": provider, "outcome": outcome}) or 0.0


def wait_for(condition, timeout: float = 10.0):
    """Until ``condition()`` is truthy (the simulator pushes from its own thread)."""
    deadline = time.monotonic() + timeout
    done = threading.Event()
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        done.wait(0.01)
    return value


@pytest.fixture
def ingress(db_url, sim, stack, tmp_path):
    """The API with its ingress on the stack's database and clock: ``.url``, ``.ingress``, ``.seen``."""
    settings = Settings(home=tmp_path / "home", database_url=db_url, secret_keys=TEST_SECRET_KEY,
                        billit=BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234",
                                              webhook_secret=SECRET, push_rate_per_second=5, push_burst=20),
                        amili_collection=AmiliCollectionSettings(base_url=sim.url, auth_url=sim.url,
                                                                 push_token=TOKEN))
    app = build_api(settings)
    seen: set[str] = set()

    def remember(key: str, _ttl: int) -> bool:
        new = key not in seen
        seen.add(key)
        return new

    app.state.services.ingress = Ingress(stack.sessions, providers_for(settings), seen=remember, clock=stack.clock)
    server = ApiServer(app).start()
    server.ingress, server.seen = app.state.services.ingress, seen
    yield server
    server.stop()


def item(stack, item_id: int) -> Item:
    with stack.sessions.begin() as s:
        found = s.get(Item, item_id)
        s.expunge(found)
        return found


def events_of(stack, item_id: int) -> list[Event]:
    with stack.sessions.begin() as s:
        return list(s.scalars(select(Event).where(Event.item_id == item_id).order_by(Event.position)))


def poll(stack) -> int:
    return stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=100, chunk_size=100)


def test_a_billit_push_makes_the_order_due_and_its_poll_writes_the_event_once(stack, sim, ingress):
    """The simulator's webhook (registered through its /v1/webhooks API) pushes, signed, when the
    order moves on: the ingress answers 202 and the order is due now; the poll writes one event."""
    r = requests.post(f"{sim.url}/v1/webhooks", headers={"ApiKey": "sim-billit-key", "PartyID": "1234"},
                      json={"EntityType": "Order", "EntityUpdateType": "U", "WebhookURL": "http://x.invalid/"},
                      timeout=10)
    assert r.status_code == 200 and len(r.json()["Secret"]) >= 32  # the API gives a secret per webhook
    sim.billit_webhooks.add(f"{ingress.url}/ingress/billit/default", secret=SECRET)
    order = sim.billit.create_order()
    item_id = stack.poller.track("billit", str(order), interval_s=3600).id
    assert poll(stack) == 1 and len(events_of(stack, item_id)) == 1
    before = item(stack, item_id)
    assert before.next_poll_at > stack.clock() + timedelta(seconds=3000)  # an hour away
    accepted = counted("billit", "accepted")
    sim.clock.advance(sim.billit.stage_seconds)  # the order moves on: Billit pushes
    wait_for(lambda: any(url.endswith("/ingress/billit/default") and status == 202
                         for url, status in sim.pusher.log))
    after = item(stack, item_id)
    assert after.next_poll_at == stack.clock() and after.lease_id == before.lease_id + 1
    assert counted("billit", "accepted") == accepted + 1
    assert poll(stack) == 1
    assert [e.type for e in events_of(stack, item_id)][1:] == ["status.changed"]
    assert poll(stack) == 0  # due again only an hour on: one push, one poll


def test_a_push_during_a_poll_voids_the_polls_answer_and_polls_again(stack, sim, ingress):
    """The poll under way may have read the order before the change the push announces: its lease
    is gone, so it stores nothing, and the next claim polls the order afresh."""
    order = sim.billit.create_order()
    item_id = stack.poller.track("billit", str(order), interval_s=3600).id
    claims: list[list[Claim]] = []
    stack.poller.dispatch_due(claims.append, lease_s=30, limit=100, chunk_size=100)
    sim.faults.add("billit", "slow", delay=LATE_S, ref=str(order), count=1)  # the provider answers late
    reports = []
    under_way = threading.Thread(target=lambda: reports.append(stack.poller.poll_claims(claims[0])))
    under_way.start()
    wait_for(lambda: not sim.faults.active("billit"))  # taken: the poll's request is being answered
    body = json.dumps({"UpdatedEntityID": order, "UpdatedEntityType": "Order", "WebhookUpdateTypeTC": "U"}).encode()
    r = requests.post(f"{ingress.url}/ingress/billit/default", data=body,
                      headers={"Billit-Signature": sign(body)}, timeout=10)
    assert r.status_code == 202 and r.json() == {"outcome": "accepted", "items": [item_id]}
    under_way.join()
    assert reports[0].lost_lease == 1 and events_of(stack, item_id) == []
    assert poll(stack) == 1 and len(events_of(stack, item_id)) == 1


#: case -> (answer, outcome counted). Each case's push is built in ``refused_push``.
REFUSALS = {
    "no signature": (401, "unsigned"),
    "malformed signature": (401, "unsigned"),
    "another secret": (401, "forged"),
    "another body": (401, "forged"),
    "ten minutes old": (401, "stale"),
    "over 1 MB": (413, "too_large"),
    "not JSON": (400, "not_json"),
    "no order named": (400, "unknown_entity"),
    "unknown account": (404, "unknown_account"),
}


def refused_push(case: str, order: int) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a push that must be refused for ``case``."""
    body = json.dumps({"UpdatedEntityID": order, "UpdatedEntityType": "Order", "Marker": "M4RK3R"}).encode()
    path, headers = "/ingress/billit/default", {"Billit-Signature": sign(body)}
    if case == "no signature":
        headers = {}
    elif case == "malformed signature":
        headers = {"Billit-Signature": "v1=abc"}
    elif case == "another secret":
        headers = {"Billit-Signature": sign(body, secret="f" * 64)}
    elif case == "another body":
        headers = {"Billit-Signature": sign(body + b" ")}
    elif case == "ten minutes old":
        headers = {"Billit-Signature": sign(body, at=time.time() - 600)}
    elif case == "over 1 MB":
        body = b" " * 1_000_001
        headers = {"Billit-Signature": sign(body)}
    elif case == "not JSON":
        body = b"UpdatedEntityID=1"
        headers = {"Billit-Signature": sign(body)}
    elif case == "no order named":
        body = json.dumps({"UpdatedEntityType": "Order", "Marker": "M4RK3R"}).encode()
        headers = {"Billit-Signature": sign(body)}
    elif case == "unknown account":
        path = "/ingress/billit/nosuch"
    return path, body, headers


def test_a_push_not_believed_polls_nothing(stack, sim, ingress):
    """Each kind of push we do not believe or cannot read: its 4xx problem (never echoing the
    body or the secret), its outcome counted, and the item left exactly as it was."""
    order = sim.billit.create_order()
    item_id = stack.poller.track("billit", str(order), interval_s=3600).id
    poll(stack)
    before = item(stack, item_id)
    for case, (status, outcome) in REFUSALS.items():
        path, body, headers = refused_push(case, order)
        refused = counted("billit", outcome)
        r = requests.post(ingress.url + path, data=body, headers=headers, timeout=10)
        assert r.status_code == status, (case, r.text)
        problem = r.json()
        assert problem["status"] == status and problem["detail"], case
        assert SECRET not in r.text and "M4RK3R" not in r.text, case  # the body is never echoed
        assert counted("billit", outcome) == refused + 1, case
    after = item(stack, item_id)
    assert (after.next_poll_at, after.lease_id) == (before.next_poll_at, before.lease_id)


def test_an_untracked_order_is_counted_and_dropped_and_pushes_are_rate_limited(stack, ingress):
    body = json.dumps({"UpdatedEntityID": 424242, "UpdatedEntityType": "Order"}).encode()
    untracked = counted("billit", "untracked")
    r = requests.post(f"{ingress.url}/ingress/billit/default", data=body, headers={"Billit-Signature": sign(body)},
                      timeout=10)
    assert r.status_code == 202 and r.json() == {"outcome": "untracked", "items": []}
    assert counted("billit", "untracked") == untracked + 1
    answers = [requests.post(f"{ingress.url}/ingress/billit/default", data=body,
                             headers={"Billit-Signature": sign(body)}, timeout=10) for _ in range(40)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(int(a.headers["Retry-After"]) >= 1 for a in limited)  # 5/s, burst 20: the rest wait
    assert counted("billit", "rate_limited") >= len(limited)


def test_an_amili_push_is_believed_on_its_path_token_and_once_per_idempotency_key(stack, sim, ingress):
    """The simulator's Amili Norway pushes CASE_UPDATED with a fresh IdempotencyKey; a wrong token
    polls nothing; the same key again is a duplicate."""
    invoice = sim.amili_collection.create_invoice()
    with stack.sessions.begin() as s:
        s.add(Item(provider="amili_collection", account="default", kind="invoice", ref=invoice, interval_s=3600,
                   state="active", next_poll_at=stack.clock() + timedelta(hours=1), lease_id=0,
                   consecutive_failures=0, failing=False, event_seq=0, claims_since_poll=0,
                   created_at=stack.clock(), updated_at=stack.clock()))
    wrong = requests.post(f"{ingress.url}/ingress/amili_collection/default/{'x' * 43}", json={}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong push token"
    sim.amili_pushes.url = f"{ingress.url}/ingress/amili_collection/default/{TOKEN}"
    sim.clock.advance(sim.amili_collection.stage_seconds)
    wait_for(lambda: any(status == 202 for url, status in sim.pusher.log if "amili_collection" in url))
    with stack.sessions.begin() as s:
        due = s.scalar(select(Item).where(Item.ref == invoice))
        assert due.next_poll_at == stack.clock() and due.lease_id == 1
    body = {"event": "CASE_UPDATED", "data": {"invoiceId": invoice}}
    first = requests.post(sim.amili_pushes.url, json=body, headers={"IdempotencyKey": "k-1"}, timeout=10)
    again = requests.post(sim.amili_pushes.url, json=body, headers={"IdempotencyKey": "k-1"}, timeout=10)
    assert (first.status_code, again.status_code) == (202, 200) and again.json()["outcome"] == "duplicate"
