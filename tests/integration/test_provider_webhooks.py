"""Issue 14: `poller providers webhooks sync billit` registers Billit's Order and Message webhooks
at POLLER_PUBLIC_URL through the simulator's /v1/webhooks, keeps their secrets encrypted, and the
ingress believes the pushes they sign; `--remove` deletes them. On both databases."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, text

from config.settings import Settings
from config.wiring import build_api, provider_webhooks_for, providers_for
from tests.apiserver import ApiServer
from tests.conftest import TEST_SECRET_KEY
from worker.ingress import Ingress
from worker.providers.billit import BillitSettings
from worker.store.models import Item, ProviderWebhook

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(db_url, sim, stack, tmp_path):
    """The API, its ingress believing the registered webhooks' secrets (and no configured one);
    ``.webhooks`` registers at its own URL."""
    settings = Settings(home=tmp_path / "home", database_url=db_url, secret_keys=TEST_SECRET_KEY,
                        billit=BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234"))
    app = build_api(settings)
    server = ApiServer(app)
    webhooks = provider_webhooks_for(settings, stack.sessions)
    app.state.services.ingress = Ingress(stack.sessions, providers_for(settings), clock=stack.clock,
                                         registered=webhooks.secrets)
    server.start()
    webhooks.public_url = server.url
    server.webhooks = webhooks
    yield server
    server.stop()


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        threading.Event().wait(0.01)
    return value


def test_sync_registers_both_webhooks_once_and_their_pushes_are_believed(stack, sim, api):
    report = api.webhooks.sync("billit", "default")
    url = f"{api.url}/ingress/billit/default"
    hooks = sim.billit_webhooks.hooks()
    assert sorted((h["EntityType"], h["EntityUpdateType"], h["WebhookURL"]) for h in hooks) == [
        ("Message", "U", url), ("Order", "U", url)]
    assert [line.split()[0] for line in report.lines] == ["registered", "registered"] and not report.problems
    with stack.sessions.begin() as s:  # the secrets are stored, encrypted
        raw = [v for (v,) in s.execute(text("SELECT secret FROM provider_webhooks ORDER BY id"))]
    assert len(raw) == 2 and all(v.startswith("fernet:") for v in raw)
    assert not any(h["Secret"] in v for h in hooks for v in raw)
    assert sorted(api.webhooks.secrets("billit", "default")) == sorted(h["Secret"] for h in hooks)

    again = api.webhooks.sync("billit", "default")  # found, not registered twice
    assert [line.split()[0] for line in again.lines] == ["kept", "kept"] and len(sim.billit_webhooks.hooks()) == 2

    order = sim.billit.create_order()
    item_id = stack.poller.track("billit", str(order), interval_s=3600).id
    stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=10, chunk_size=10)
    sim.clock.advance(sim.billit.stage_seconds)  # the order moves on: both webhooks push, signed
    pushed = wait_for(lambda: [status for push_url, status in sim.pusher.log if push_url == url]
                      if len(sim.pusher.log) >= 2 else None)
    assert pushed == [202, 202]
    with stack.sessions.begin() as s:
        assert s.get(Item, item_id).next_poll_at == stack.clock()  # due now

    forged = requests.post(url, data=b'{"UpdatedEntityID": 1}', timeout=10,
                           headers={"Billit-Signature": f"t={int(time.time())},s={'0' * 64}"})
    assert forged.status_code == 401


def test_remove_deletes_the_webhooks_it_made_and_forgets_the_adopted(stack, sim, api):
    url = f"{api.url}/ingress/billit/default"
    adopted = sim.billit_webhooks.add(url, "Order", "U")  # there before, its secret listed: adopted
    report = api.webhooks.sync("billit", "default")
    assert sorted(line.split()[0] for line in report.lines) == ["adopted", "registered"]
    removed = api.webhooks.remove("billit", "default")
    assert sorted(line.split()[0] for line in removed.lines) == ["deleted", "forgot"]
    assert [h["WebhookID"] for h in sim.billit_webhooks.hooks()] == [adopted["WebhookID"]]
    with stack.sessions.begin() as s:
        assert s.scalars(select(ProviderWebhook)).all() == []
    assert api.webhooks.secrets("billit", "default") == []


def test_a_new_public_url_moves_the_webhooks(stack, sim, api):
    api.webhooks.sync("billit", "default")
    old = {h["WebhookID"] for h in sim.billit_webhooks.hooks()}
    api.webhooks.public_url = api.url + "/new"
    report = api.webhooks.sync("billit", "default")
    assert sorted(line.split()[0] for line in report.lines) == ["deleted", "deleted", "registered", "registered"]
    hooks = sim.billit_webhooks.hooks()
    assert not old & {h["WebhookID"] for h in hooks}
    assert {h["WebhookURL"] for h in hooks} == {f"{api.url}/new/ingress/billit/default"}
    assert len(api.webhooks.secrets("billit", "default")) == 2


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "providers", "webhooks", "sync", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_command_registers_and_says_what_is_missing(db_url, sim, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("POLLER_")}
    env.update({"POLLER_HOME": str(tmp_path / "home"), "POLLER_DATABASE_URL": db_url,
                "POLLER_SECRET_KEYS": TEST_SECRET_KEY, "POLLER_BILLIT__BASE_URL": sim.url,
                "POLLER_BILLIT__API_KEY": "sim-billit-key", "POLLER_BILLIT__PARTY_ID": "1234"})
    missing = _cli(env, "billit")
    assert missing.returncode == 2 and "POLLER_PUBLIC_URL" in missing.stderr, missing.stderr
    env["POLLER_PUBLIC_URL"] = "https://poller.example.com"
    done = _cli(env, "billit")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("registered webhook") == 2
    assert "-> https://poller.example.com/ingress/billit/default" in done.stdout
    assert "sim-billit-key" not in done.stdout + done.stderr
    other = _cli(env, "amili_ada")
    assert other.returncode == 2 and "has no webhooks API" in other.stderr
    gone = _cli(env, "billit", "--remove")
    assert gone.returncode == 0 and gone.stdout.count("deleted webhook") == 2 and sim.billit_webhooks.hooks() == []
