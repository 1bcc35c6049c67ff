"""Issue 15: a provider is its module plus one registry line. Here a sixth provider, Acme Pay, is
defined only in this module (a settings class and a small adapter) and given to the one entry
point, ``registry_of``; the test's own registry leaves the build's untouched. From that line alone
the settings take ``POLLER_ACME_PAY__*`` (with accounts), the wiring boots, the event schema's enum
names it, and its items are tracked, polled against a fake HTTP server and turned into events.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

import jsonschema
import pytest
from pydantic import SecretStr

from config import wiring
from config.settings import CoreSettings, Settings, load_settings, settings_model
from tests.peer import Answer, Peer, Request
from worker.catalog import ItemSpec
from worker.domain import ItemRef, StatusDocument
from worker.errors import ConfigurationError, InputError
from worker.providers.base import Fetched, HttpClient, ProviderContext
from worker.providers.refs import check_ref, segment
from worker.providers.registry import REGISTRY, ProviderSpec, registry_of
from worker.providers.settings import ProviderSettings, secret
from worker.store import crypto
from worker.webhooks import payload
from worker.webhooks.schema import event_schema

NAME = "acme_pay"


class AcmePaySettings(ProviderSettings):
    """``POLLER_ACME_PAY__*``."""

    NAME: ClassVar[str] = NAME
    REQUIRED: ClassVar[tuple[str, ...]] = ("base_url", "api_key")

    api_key: SecretStr | None = None


class AcmePayProvider:
    """``GET /invoices/{ref}`` -> ``{"id", "state"}``, with a bearer key."""

    name: ClassVar[str] = NAME
    kinds: ClassVar[tuple[str, ...]] = ("invoice",)

    def __init__(self, settings: AcmePaySettings, account: str, ctx: ProviderContext) -> None:
        self.settings, self.account = settings, account
        self.http = HttpClient(NAME, settings.base_url, ctx.http, clock=ctx.clock)

    def validate_ref(self, kind: str, ref: str) -> str:
        return check_ref(NAME, kind, ref, in_path=True, max_len=40)

    def fetch(self, item: ItemRef, version: str | None) -> Fetched:
        self.settings.require(self.account, "base_url", "api_key")
        _, body = self.http.request_json("GET", f"/invoices/{segment(NAME, item.kind, item.ref)}", headers={
            "Authorization": f"Bearer {secret(self.settings.api_key)}"})
        return Fetched(body)

    def normalize(self, raw: Any, item: ItemRef) -> StatusDocument:
        state = str(raw["state"])
        return StatusDocument(state, state == "paid", {"state": state}, raw)


#: The build's providers and Acme Pay: the one line a new provider needs.
ACME_REGISTRY = registry_of([*REGISTRY.values(), ProviderSpec(NAME, AcmePaySettings, AcmePayProvider)])
AcmeSettings = settings_model(ACME_REGISTRY)


@pytest.fixture
def environ(monkeypatch, tmp_path):
    """No POLLER_ variable but the test's, and no .env file."""
    for name in list(os.environ):
        if name.upper().startswith("POLLER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_read_the_new_providers_variables(environ):
    """POLLER_ACME_PAY__* and its accounts set Acme Pay's settings; a misspelt one is refused
    naming the right one; the other providers' variables work as before."""
    environ.setenv("POLLER_ACME_PAY__BASE_URL", "https://api.acme.test")
    environ.setenv("POLLER_ACME_PAY__API_KEY", "k-default")
    environ.setenv("POLLER_ACME_PAY__ACCOUNTS__EAST__API_KEY", "k-east")
    environ.setenv("POLLER_BILLIT__API_KEY", "billit-key")
    settings = load_settings(AcmeSettings)
    acme = settings.provider(AcmePaySettings)
    assert (acme.base_url, secret(acme.api_key)) == ("https://api.acme.test", "k-default")
    east = acme.for_account("east")
    assert (east.base_url, secret(east.api_key)) == ("https://api.acme.test", "k-east")
    assert secret(settings.provider("billit").api_key) == "billit-key"
    assert list(settings.providers()) == [*REGISTRY, NAME]

    environ.setenv("POLLER_ACME_PAY__API_KYE", "typo")
    with pytest.raises(ConfigurationError, match="POLLER_ACME_PAY__API_KYE is not a setting; "
                                                  "did you mean POLLER_ACME_PAY__API_KEY"):
        load_settings(AcmeSettings)
    environ.delenv("POLLER_ACME_PAY__API_KYE")
    environ.setenv("POLLER_ACME_PAY__ACCOUNTS__EAST__BASE_URL", "acme.test")
    with pytest.raises(ConfigurationError, match="POLLER_ACME_PAY__ACCOUNTS__EAST__BASE_URL: must be an http"):
        load_settings(AcmeSettings)


def test_the_builds_settings_do_not_know_the_test_provider(environ):
    """The test's registry is its own: the build's Settings still refuse POLLER_ACME_PAY__*."""
    environ.setenv("POLLER_ACME_PAY__API_KEY", "k")
    assert NAME not in REGISTRY and NAME not in Settings.model_fields
    with pytest.raises(ConfigurationError, match="POLLER_ACME_PAY__API_KEY is not a setting"):
        load_settings(Settings)
    with pytest.raises(InputError, match="unknown provider 'acme_pay'"):
        Settings().provider(NAME)


def test_event_schema_names_the_new_provider():
    """The schema generated from the test's registry takes an Acme Pay event; the published one
    (the build's registry) does not."""
    data = {"item_id": 1, "provider": NAME, "account": "default", "kind": "invoice", "ref": "inv-1",
            "status": "open", "previous_status": None, "terminal": False, "changes": [], "snapshot": {},
            "error": None, "consecutive_failures": 0}
    body = {"id": "evt_1", "version": payload.SCHEMA_VERSION, "type": "status.observed",
            "timestamp": "2026-11-23T12:00:00Z", "item_id": 1, "seq": 1, "data": data}
    jsonschema.Draft202012Validator(event_schema(ACME_REGISTRY)).validate(body)
    with pytest.raises(jsonschema.ValidationError, match="'acme_pay' is not one of"):
        jsonschema.Draft202012Validator(event_schema(REGISTRY)).validate(body)


def test_wiring_boots_and_polls_the_new_provider(environ, db_url, tmp_path):
    """Configured by its variables only, Acme Pay is wired like any provider: its items are
    tracked through the catalog (refused while its key is unset), polled against its HTTP API by
    the service, and their events carry its name and fit the generated schema."""
    state = {"inv-1": "open"}
    key = crypto.new_key()

    def load() -> CoreSettings:
        return AcmeSettings(home=tmp_path / "home", database_url=db_url, secret_keys=key,
                            webhook_allow_http=True, webhook_allow_private=True)

    with Peer(lambda r: answer(r, state)) as server:
        environ.setenv("POLLER_ACME_PAY__BASE_URL", server.url())
        settings = load()
        try:
            with pytest.raises(InputError, match="acme_pay account 'default' is not configured: "
                                                 "set POLLER_ACME_PAY__API_KEY"):
                wiring.catalog_for(settings).upsert(ItemSpec(NAME, "inv-1"))
            environ.setenv("POLLER_ACME_PAY__API_KEY", "k-acme")
            booted = boot(load())

            item, created = booted["catalog"].upsert(ItemSpec(NAME, "inv-1"))
            assert created and (item.provider, item.kind) == (NAME, "invoice")
            service = booted["service"]
            service.dispatch_due(service.poll_claims, lease_s=30, limit=10, chunk_size=10)
            state["inv-1"] = "paid"
            booted["catalog"].poll_now(item.id)
            service.dispatch_due(service.poll_claims, lease_s=30, limit=10, chunk_size=10)

            events = service.events_after(0)
            assert [(e.type, e.data["provider"], e.data["status"]) for e in events] == [
                ("status.observed", NAME, "open"), ("status.changed", NAME, "paid")]
            validator = jsonschema.Draft202012Validator(event_schema(ACME_REGISTRY))
            for e in events:
                validator.validate(strict_body(e))
            assert {r.headers.get("authorization") for r in server.requests} == {"Bearer k-acme"}
        finally:
            forget_engine(settings)


def boot(settings: CoreSettings) -> dict[str, Any]:
    """What the daemon and the API build from settings, each checked to know Acme Pay."""
    sub, _ = wiring.subscriptions_for(settings).add("http://127.0.0.1:9/hook", providers=[NAME])
    assert sub.providers == [NAME]
    assert wiring.providers_for(settings).get(NAME, "default").settings.api_key is not None
    wiring.build_api(settings)
    wiring.sweeper_for(settings)
    return {"service": wiring.build_service(settings), "catalog": wiring.catalog_for(settings)}


def answer(request: Request, state: dict[str, str]) -> Answer:
    ref = request.path.removeprefix("/invoices/")
    return Answer(200, {"id": ref, "state": state[ref]}) if ref in state else Answer(404, {"error": "no such invoice"})


def strict_body(event: Any) -> dict[str, Any]:
    """The event as a subscriber receives it."""
    return json.loads(payload.body(event.id, event.type, event.created_at, event.data, item_id=event.item_id,
                                   seq=event.seq))


def forget_engine(settings: CoreSettings) -> None:
    """Close the pooled connections wiring keeps per process and URL (the database is dropped next)."""
    engine = wiring._engines.pop((os.getpid(), settings.resolved_database_url()), None)
    if engine is not None:
        engine.dispose()
