"""The fake Amili Debt.Collection API: faults, admin routes, seeding, env and stats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from simulator import Simulator
from tests.sim import amili_no, common

sim = common.sim_fixture(token_ttl_seconds=amili_no.TTL, options=common.NO_AMILI_NO_SEED)
auth = common.token_fixture(common.COLLECTION_CLIENT)


def test_fault_500_and_503(sim: Simulator, auth: dict[str, str]) -> None:
    """ "500" answers an HTML error page; "503" carries Retry-After when armed with one."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "500", count=1)
    sim.faults.add("amili_collection", "503", count=1, retry_after=4)
    common.assert_html(amili_no.get_invoice(sim, invoice_id, auth), 500)
    second = amili_no.get_invoice(sim, invoice_id, auth)
    assert second.status_code == 503 and second.headers["Retry-After"] == "4"
    assert amili_no.get_invoice(sim, invoice_id, auth).status_code == 200


def test_fault_429_has_retry_after(sim: Simulator, auth: dict[str, str]) -> None:
    """A "429" fault answers Amili's error body with Retry-After."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "429", retry_after=7)
    response = amili_no.get_invoice(sim, invoice_id, auth)
    amili_no.assert_amili_error(response, 429, "TooManyRequests")
    assert response.headers["Retry-After"] == "7"


def _invoice(sim: Simulator) -> Callable[[float], requests.Response]:
    invoice_id = sim.amili_collection.create_invoice()
    headers = common.bearer(common.new_token(sim, common.COLLECTION_CLIENT))
    return lambda timeout: amili_no.get_invoice(sim, invoice_id, headers, timeout=timeout)


def _amili_error(response: requests.Response, status: int) -> None:
    amili_no.assert_amili_error(response, status, {404: "NotFound", 401: "Unauthorized"}[status])


test_fault_slow_trips_client_timeout, test_fault_malformed_and_html, test_fault_404_and_401_use_amili_bodies = (
    common.fault_tests("amili_collection", _invoice, 200, _amili_error)
)


def test_faults_apply_after_auth_and_by_ref(sim: Simulator, auth: dict[str, str]) -> None:
    """Bad tokens do not consume faults; a ref-scoped fault hits only that item (or "cases")."""
    first = sim.amili_collection.create_invoice()
    second = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "500", count=1, ref=second)
    sim.faults.add("amili_collection", "503", count=1, ref="cases")
    assert amili_no.get_invoice(sim, second, {"Authorization": "Bearer nope"}).status_code == 401
    assert amili_no.get_invoice(sim, first, auth).status_code == 200
    assert amili_no.get_invoice(sim, second, auth).status_code == 500
    assert amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/cases", auth).status_code == 503
    assert sim.faults.active() == []


def test_token_fault_breaks_only_the_token_call(sim: Simulator, auth: dict[str, str]) -> None:
    """A fault with ref "token" fails POST /token; unscoped faults never touch the token call."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "503", count=1, ref="token")
    outage = amili_no.post_token(sim)
    assert outage.status_code == 503
    assert amili_no.get_invoice(sim, invoice_id, auth).status_code == 200
    sim.faults.add("amili_collection", "500")
    assert amili_no.post_token(sim).status_code == 200
    assert amili_no.get_invoice(sim, invoice_id, auth).status_code == 500
    sim.faults.clear()
    sim.faults.add("amili_collection", "429", count=1, ref="token", retry_after=2)
    limited = amili_no.post_token(sim)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json()["error"] == "temporarily_unavailable"
    # A collection token fault leaves the ARM client's token calls alone.
    sim.faults.add("amili_collection", "500", ref="token")
    assert amili_no.post_token(sim, {"grant_type": "client_credentials", **common.ARM_CLIENT}).status_code == 200


def test_admin_create_list_and_stage(sim: Simulator, auth: dict[str, str]) -> None:
    """Invoices and batches created, listed and staged over the admin API change what the API answers."""
    base = f"{sim.url}/_sim/amili_collection"
    created = requests.post(f"{base}/invoices", json={"id": "inv-77", "scenario": "withdrawn"}, timeout=common.TIMEOUT)
    assert created.status_code == 201 and created.json() == {"id": "inv-77"}
    auto = requests.post(f"{base}/invoices", json={"legacy": True}, timeout=common.TIMEOUT)
    assert auto.status_code == 201 and common.UUID.match(auto.json()["id"])
    batch = requests.post(f"{base}/batches", json={"scenario": "failed"}, timeout=common.TIMEOUT)
    assert batch.status_code == 201
    batch_id = batch.json()["id"]

    listed = requests.get(f"{base}/invoices", timeout=common.TIMEOUT).json()["invoices"]
    assert [(i["id"], i["scenario"], i["legacy"], i["status"]) for i in listed] == [
        ("inv-77", "withdrawn", False, "OPEN"), (auto.json()["id"], "paid", True, "Open"),
    ]  # fmt: skip
    staged = requests.post(f"{base}/invoices/inv-77/stage", json={"stage": 1}, timeout=common.TIMEOUT)
    assert staged.json() == {"id": "inv-77", "stage": 1}
    assert amili_no.invoice_data(sim, "inv-77", auth)["status"] == "WITHDRAWN"
    requests.post(f"{base}/batches/{batch_id}/stage", json={"stage": 2}, timeout=common.TIMEOUT).close()
    assert amili_no.get_batch(sim, batch_id, auth)["status"] == "FAILED"
    batches = requests.get(f"{base}/batches", timeout=common.TIMEOUT).json()["batches"]
    assert [(b["id"], b["stage"], b["status"]) for b in batches] == [(batch_id, 2, "FAILED")]


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/invoices", {"scenario": "lost"}),
        ("/invoices", {"legacy": "yes"}),
        ("/invoices", {"id": 5}),
        ("/invoices", {"id": "has/slash"}),
        ("/invoices", {"colour": "red"}),
        ("/invoices", [1, 2]),
        ("/batches", {"scenario": "paid"}),
        ("/batches", {"scenario": 3}),
        ("/invoices/inv-1/stage", {"stage": 9}),
        ("/invoices/inv-1/stage", {"stage": "2"}),
    ],
)
def test_admin_bad_input_is_400(sim: Simulator, path: str, payload: Any) -> None:
    """Invalid admin requests answer 400 with an error message."""
    sim.amili_collection.create_invoice("inv-1")
    common.assert_refused(f"{sim.url}/_sim/amili_collection{path}", payload)


def test_admin_duplicate_and_unknown_ids(sim: Simulator) -> None:
    """A duplicate id (any case) answers 400; staging an unknown id answers 404."""
    sim.amili_collection.create_invoice("dup-1")
    base = f"{sim.url}/_sim/amili_collection"
    dup = requests.post(f"{base}/batches", json={"id": "DUP-1"}, timeout=common.TIMEOUT)
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]
    missing = requests.post(f"{base}/invoices/nope/stage", json={"stage": 1}, timeout=common.TIMEOUT)
    assert missing.status_code == 404
    with pytest.raises(ValueError):
        sim.amili_collection.create_invoice(scenario="lost")
    with pytest.raises(KeyError):
        sim.amili_collection.set_stage("nope", 1)


def test_seed_env_and_describe() -> None:
    """By default two invoices (new and legacy spelling) and a batch are seeded; env() points the poller here."""
    with common.running() as seeded:
        invoices = seeded.amili_collection.invoices()
        assert [(i["scenario"], i["legacy"], i["status"]) for i in invoices] == [
            ("paid", False, "OPEN"), ("paid", True, "Open"),
        ]  # fmt: skip
        assert [b["status"] for b in seeded.amili_collection.batches()] == ["QUEUED"]
        env = seeded.amili_collection.env(seeded.url)
        assert env == {
            **common.client_env("amili_collection", seeded.url, common.COLLECTION_CLIENT),
            "POLLER_AMILI_COLLECTION__ORG_ID": amili_no.ORG,
        }
        text = seeded.describe()
        assert f"export POLLER_AMILI_COLLECTION__AUTH_URL={seeded.url}" in text
        assert invoices[1]["id"] in text
        # The poller's token URL is {AUTH_URL}/token.
        token = requests.post(
            f"{env['POLLER_AMILI_COLLECTION__AUTH_URL']}/token",
            data={
                "grant_type": "client_credentials",
                "client_id": env["POLLER_AMILI_COLLECTION__CLIENT_ID"],
                "client_secret": env["POLLER_AMILI_COLLECTION__CLIENT_SECRET"],
            },
            timeout=common.TIMEOUT,
        )
        assert token.status_code == 200


def test_options_override_credentials_and_org() -> None:
    """Client id, secret and org id come from options."""
    options = {
        "amili_collection_seed": 0,
        "amili_collection_client_id": "cid",
        "amili_collection_client_secret": "csecret",
        "amili_collection_org_id": amili_no.OTHER_ORG,
    }
    with common.running(options=options) as custom:
        invoice_id = custom.amili_collection.create_invoice()
        token = requests.post(
            f"{custom.url}/token",
            data={"grant_type": "client_credentials", "client_id": "cid", "client_secret": "csecret"},
            timeout=common.TIMEOUT,
        ).json()["access_token"]
        response = amili_no.get_invoice(custom, invoice_id, common.bearer(token), org=amili_no.OTHER_ORG)
        assert response.status_code == 200 and response.json()["data"]["organization"]["id"] == amili_no.OTHER_ORG
        assert amili_no.get_invoice(custom, invoice_id, common.bearer(token), org=amili_no.ORG).status_code == 403


def test_stats_label_token_calls_apart(sim: Simulator, auth: dict[str, str]) -> None:
    """API calls count under amili_collection; token calls under the shared "identity" label."""
    invoice_id = sim.amili_collection.create_invoice()
    amili_no.get_invoice(sim, invoice_id, auth).close()
    requests_by_label = sim.stats()["requests"]
    assert requests_by_label["amili_collection"]["total"] == 1
    assert requests_by_label["identity"] == {"total": 1, "paths": {"POST /token": 1}}
