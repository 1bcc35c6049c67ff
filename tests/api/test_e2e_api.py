"""The front door end to end: an invoicing service tracks an order through the API, real Celery
worker and beat processes poll it, and the service reads the events from the API and receives
them, signed, at its webhook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.daemons import ROOT, wait_for

pytestmark = pytest.mark.e2e


def test_an_item_created_by_the_api_is_polled_and_its_events_are_read_and_delivered(
        api, daemon_env, sim, receiver, broker_url, tmp_path):
    c = api.client()
    sub = c.post("/v1/subscriptions", json={"url": receiver.url, "labels": {"customer": "acme"}})
    assert sub.status_code == 201, sub.text
    receiver.secrets = [sub.json()["secret"]]
    ref = sim.billit.create_order()
    other = sim.billit.create_order()
    item = c.post("/v1/items", json={"provider": "billit", "ref": str(ref), "interval_seconds": 0.3,
                                     "labels": {"customer": "acme"}, "external_id": "INV-2026-1"}).json()
    c.post("/v1/items", json={"provider": "billit", "ref": str(other), "interval_seconds": 0.3,
                              "labels": {"customer": "globex"}})
    env = {**daemon_env, "POLLER_BROKER_URL": broker_url, "POLLER_WEBHOOK_ALLOW_HTTP": "true",
           "POLLER_WEBHOOK_ALLOW_PRIVATE": "true"}
    procs = []
    for role in ("worker", "beat"):
        with open(tmp_path / f"{role}.log", "ab") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "cli.main", role], env=env, cwd=ROOT, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True))
    try:
        for stage in range(3):
            wait_for(f"stage {stage} delivered", lambda n=stage: len(receiver.ok()) >= n + 1 or None,
                     proc=procs[0], log=tmp_path / "worker.log")
            sim.clock.advance(10)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    events, after = [], None
    while True:
        page = c.get("/v1/events", params={"item_id": item["id"], "limit": 2, **({"after": after} if after else {})})
        events += page.json()["data"]
        after = page.json()["next_cursor"]
        if not page.json()["has_more"]:
            break
    statuses = [e["data"]["status"] for e in events]
    assert statuses[:3] == ["to_send", "pending_delivery", "delivered"]
    assert all(e["data"]["labels"] == {"customer": "acme"} and e["data"]["external_id"] == "INV-2026-1"
               for e in events)
    received = receiver.ok()
    # Only the labelled item's events reach this subscription, verified, each with its event id.
    assert {r.json["data"]["external_id"] for r in received} == {"INV-2026-1"}
    assert [r.webhook_id for r in received] == [e["id"] for e in events[:len(received)]]
    assert all(r.verified_with == [0] for r in received)
