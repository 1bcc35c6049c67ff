"""The webhook contract: what every body carries, strict JSON, an open and versioned schema
(issue 9 #9), and one subscription per URL and filters (issue 9 #10).

Real database, a real receiver over loopback, the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select, text

from tests.integration import test_cli
from tests.stack import SCHEMA, VALIDATOR, Stack
from worker.errors import InputError
from worker.store.db import make_engine, sqlite_url
from worker.store.migrate import upgrade
from worker.store.models import DeliveryAttempt, Event, Subscription
from worker.webhooks import payload

env = test_cli.env  # the CLI test's environment fixture: its own database and POLLER_HOME


def strict_loads(body: bytes) -> Any:
    """Parse as RFC 8259 JSON, as a strict receiver would: a body holding NaN, Infinity or a number
    out of range (read as infinity) does not survive being written back without them. Kept apart
    from worker.documents on purpose: the test must not check the code with the code."""
    document = json.loads(body)
    json.dumps(document, allow_nan=False)  # ValueError: "Out of range float values are not JSON compliant"
    return document


def walk(node: Any):
    """Every object in a JSON document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# -- #9 what a body carries ----------------------------------------------------------------

def test_every_body_carries_event_id_item_and_seq(stack, receiver):
    """Issue 9 #9: a body had no event id or per-item sequence, so a receiver could not see a gap.
    Now id (= webhook-id), item_id, seq (1, 2, 3 per item) and the contract version are in every
    body, which is strict JSON and valid against the schema."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    items = stack.orders(2, stages=2)
    stack.deliver()
    got = receiver.wait_for(6)
    events = {e.id: e for e in stack.poller.events_after(0)}
    seqs: dict[int, list[int]] = {}
    for r in got:
        body = strict_loads(r.body)
        VALIDATOR.validate(body)
        assert body["id"] == r.webhook_id
        assert body["version"] == payload.SCHEMA_VERSION
        assert (body["item_id"], body["seq"]) == (events[r.webhook_id].item_id, events[r.webhook_id].seq)
        assert body["item_id"] == body["data"]["item_id"]
        seqs.setdefault(body["item_id"], []).append(body["seq"])
    assert seqs == {item: [1, 2, 3] for item in items}


def test_events_of_no_item_carry_null_item_and_seq(stack, receiver):
    """Issue 9 #9: a subscription.disabled body has id and version, and null item_id and seq."""
    gone, _ = stack.subs.add(receiver.url + "?gone=1")
    watcher, secret = stack.subs.add(receiver.url, types=["subscription.disabled"])
    receiver.secrets = [secret]
    stack.orders(1, stages=0)
    receiver.plan(410)
    stack.deliver()  # the 410 disables `gone` and writes subscription.disabled
    stack.deliver()
    (notice,) = [r for r in receiver.ok() if r.json["type"] == "subscription.disabled"]
    body = strict_loads(notice.body)
    VALIDATOR.validate(body)
    assert (body["id"], body["item_id"], body["seq"]) == (notice.webhook_id, None, None)
    assert body["data"]["subscription_id"] == gone.id


def test_schema_is_open_to_additions_and_versioned():
    """Issue 9 #9: `additionalProperties: false` on the envelope and on data made any addition a
    breaking change for strict receivers. The schema is open and its $id carries the version."""
    assert not [node for node in walk(SCHEMA) if node.get("additionalProperties") is False]
    major, minor = payload.SCHEMA_VERSION.split(".")
    assert f"/{payload.SCHEMA_VERSION}/" in SCHEMA["$id"]
    assert jsonschema.Draft202012Validator.check_schema(SCHEMA) is None
    body = {"id": "evt_1", "version": f"{major}.{int(minor) + 1}", "type": "status.observed",
            "timestamp": "2026-11-23T12:00:00Z", "item_id": 4, "seq": 1, "new_top_level_key": True,
            "data": {"item_id": 4, "provider": "billit", "account": "default", "kind": "order", "ref": "1",
                     "status": "paid", "previous_status": None, "terminal": True, "changes": [],
                     "snapshot": {}, "error": None, "consecutive_failures": 0, "new_data_key": [1]}}
    VALIDATOR.validate(body)  # a later 1.x body with more keys still validates
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate({**body, "version": "2.0"})
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate({k: v for k, v in body.items() if k != "seq"})


def test_body_refuses_nan_with_a_clear_error():
    """Issue 9 #9 (strict JSON): NaN and Infinity went out verbatim; the body builder refuses them."""
    from datetime import UTC, datetime

    when = datetime(2026, 11, 23, tzinfo=UTC)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="evt_x is not strict JSON"):
            payload.body("evt_x", "status.changed", when, {"amount": bad}, item_id=1, seq=2)
    sent = payload.body("evt_y", "status.changed", when, {"amount": 1.5}, item_id=1, seq=2)
    assert strict_loads(sent)["data"] == {"amount": 1.5}


def test_an_event_that_is_not_strict_json_is_a_failed_attempt(tmp_path, sim, clock, receiver):
    """Issue 9 #9 (strict JSON): a stored event holding NaN (written before the edge refused it)
    is recorded as a failed attempt naming the cause; the batch goes on and the other item's
    event is delivered. SQLite only: PostgreSQL's JSONB cannot hold a NaN at all."""
    engine = make_engine(sqlite_url(tmp_path / "nan.db"))
    upgrade(engine)
    try:
        stack = Stack(engine, sim, clock)
        sub, secret = stack.subs.add(receiver.url)
        receiver.secrets = [secret]
        first, second = stack.orders(2, stages=0)
        with engine.begin() as conn:
            data = conn.execute(text("SELECT data FROM events WHERE item_id = :i"), {"i": first}).scalar_one()
            doc = json.loads(data) if isinstance(data, str) else data
            conn.execute(text("UPDATE events SET data = :d WHERE item_id = :i"),
                         {"d": json.dumps({**doc, "amount": math.nan}), "i": first})
        stack.deliver()
        assert [strict_loads(r.body)["item_id"] for r in receiver.ok()] == [second]
        with stack.sessions.begin() as s:
            bad_event = s.scalar(select(Event.id).where(Event.item_id == first))
            attempts = s.scalars(select(DeliveryAttempt)).all()
        failed = [a for a in attempts if a.status_code is None]
        assert len(failed) == 1 and "not strict JSON" in failed[0].error and bad_event in failed[0].error
    finally:
        engine.dispose()


# -- #10 one subscription per URL and filters ----------------------------------------------

def test_same_url_and_filters_twice_is_refused(stack, receiver):
    """Issue 9 #10: the same URL subscribed twice got every event twice. A second subscription with
    the same URL and filters (compared as sets) is refused naming the existing one; nothing is stored."""
    first, _ = stack.subs.add(receiver.url)
    with pytest.raises(InputError, match=f"subscription {first.id} already sends the same events"):
        stack.subs.add(receiver.url)
    typed, _ = stack.subs.add(receiver.url, types=["status.changed", "item.gone"], providers=["billit"])
    with pytest.raises(InputError, match=f"subscription {typed.id} "):
        stack.subs.add(receiver.url, types=["item.gone", "status.changed"], providers=["billit"])
    host_case = receiver.url.replace("http://127.0.0.1", "HTTP://127.0.0.1")
    with pytest.raises(InputError, match=f"subscription {first.id} "):
        stack.subs.add(host_case)
    # Other filters or another endpoint are another subscription.
    stack.subs.add(receiver.url, types=["status.changed"])
    stack.subs.add(receiver.url + "?tenant=2")
    stack.subs.set_enabled(first.id, False)
    with pytest.raises(InputError, match=f"webhooks enable {first.id}"):
        stack.subs.add(receiver.url)
    assert len(stack.rows(Subscription)) == 4


def test_cli_refuses_a_duplicate_subscription_with_exit_2(env):
    """Issue 9 #10: `poller webhooks add` of the same URL twice exits 2 with one line naming the
    existing subscription; the list still has one."""
    env = {**env, "POLLER_WEBHOOK_ALLOW_HTTP": "1", "POLLER_WEBHOOK_ALLOW_PRIVATE": "1"}
    url = "http://127.0.0.1:9/hook"
    test_cli.poller(env, "migrate")
    assert test_cli.poller(env, "webhooks", "add", url).stdout.startswith("subscription 1\n")
    again = test_cli.poller(env, "webhooks", "add", url, ok=False)
    assert again.returncode == 2, again.stderr
    assert again.stderr.strip().splitlines() == [
        "error: subscription 1 already sends the same events to this URL (same event types and providers); "
        "remove it first (`poller webhooks remove 1`) to replace it"]
    listed = json.loads(test_cli.poller(env, "webhooks", "list", "--json").stdout)
    assert [s["id"] for s in listed] == [1]
