"""The fake Amili Debt.Collection API over real loopback HTTP: the shared POST /token and the API's bearer auth."""

from __future__ import annotations

import json
import time

import pytest
import requests

from simulator import Simulator
from simulator.identity import TokenService
from tests.sim import amili_no, common

sim = common.sim_fixture(token_ttl_seconds=amili_no.TTL, options=common.NO_AMILI_NO_SEED)
auth = common.token_fixture(common.COLLECTION_CLIENT)


def test_token_has_azure_style_body(sim: Simulator) -> None:
    """client_credentials gets the documented body: string epochs, int expires_in, no-store."""
    before = int(time.time())
    response = amili_no.post_token(sim)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert list(body) == ["access_token", "token_type", "not_before", "expires_in", "expires_on", "resource"]
    assert body["token_type"] == "Bearer" and body["access_token"]
    assert isinstance(body["not_before"], str) and isinstance(body["expires_on"], str)
    assert body["expires_in"] == amili_no.TTL and isinstance(body["expires_in"], int)
    assert before <= int(body["not_before"]) <= int(time.time())
    assert int(body["expires_on"]) - int(body["not_before"]) in (amili_no.TTL, amili_no.TTL + 1)
    assert isinstance(body["resource"], str) and body["resource"]
    assert sim.amili_collection.tokens_issued == 1


def test_token_accepts_scope_and_charset(sim: Simulator) -> None:
    """An optional scope is ignored and a charset on the form Content-Type is fine."""
    body = "grant_type=client_credentials&client_id=sim-collection-client&client_secret=sim-collection-secret"
    response = requests.post(
        f"{sim.url}/token",
        data=body + "&scope=write%3Acollection.case",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        timeout=common.TIMEOUT,
    )
    assert response.status_code == 200 and response.json()["access_token"]


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_credentials", "client_id": "sim-collection-client", "client_secret": "wrong"},
        {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "sim-collection-secret"},
    ],
    ids=["wrong-secret", "unknown-client"],
)
def test_token_bad_credentials_401(sim: Simulator, form: dict[str, str]) -> None:
    """Wrong client credentials get 401 invalid_client and no token."""
    response = amili_no.post_token(sim, form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client" and response.json()["error_description"]
    assert sim.amili_collection.tokens_issued == 0


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", **common.COLLECTION_CLIENT}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", **common.COLLECTION_CLIENT}, "unsupported_grant_type"),
        (common.COLLECTION_CLIENT, "invalid_request"),
        ({"grant_type": "client_credentials", "client_id": "sim-collection-client"}, "invalid_request"),
    ],
    ids=["password", "authorization_code", "no-grant", "no-secret"],
)
def test_token_bad_grant_400(sim: Simulator, form: dict[str, str], error: str) -> None:
    """A wrong or missing grant_type, or a missing secret, gets 400 with the OAuth2 error."""
    response = amili_no.post_token(sim, form)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_token_json_body_and_repeated_params_400(sim: Simulator) -> None:
    """A JSON (not form-encoded) body or a repeated parameter gets 400 invalid_request."""
    form = {"grant_type": "client_credentials", **common.COLLECTION_CLIENT}
    as_json = requests.post(f"{sim.url}/token", json=form, timeout=common.TIMEOUT)
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = requests.post(
        f"{sim.url}/token",
        data=[("grant_type", "client_credentials"), ("client_id", "a"), ("client_id", "b"), ("client_secret", "x")],
        timeout=common.TIMEOUT,
    )
    assert repeated.status_code == 400 and repeated.json()["error"] == "invalid_request"


def test_token_service_expiry_with_injected_time() -> None:
    """TokenService tokens die ttl real seconds after issue; check() follows time_fn."""
    now = [1_000.0]
    service = TokenService({"c": "s"}, 60, time_fn=lambda: now[0])
    response = service.issue({"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"})
    body = json.loads(response.body)
    assert (body["not_before"], body["expires_on"], body["expires_in"]) == ("1000", "1060", 60)
    header = f"Bearer {body['access_token']}"
    assert service.check(header) and service.check(f"bearer {body['access_token']}")
    now[0] = 1_059.9
    assert service.check(header)
    now[0] = 1_060.0
    assert not service.check(header)
    assert service.problem(header) == "The access token has expired"
    assert not service.check(None) and not service.check("Basic abc") and not service.check("Bearer nope")
    assert service.issued == 1


def test_valid_token_is_reused_across_calls(sim: Simulator, auth: dict[str, str]) -> None:
    """One token serves many API calls; no new token is issued."""
    invoice_id = sim.amili_collection.create_invoice()
    for _ in range(3):
        assert amili_no.get_invoice(sim, invoice_id, auth).status_code == 200
    assert sim.amili_collection.tokens_issued == 1


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, "Bearer"),
        ({"Authorization": "Bearer not-a-token"}, 'Bearer error="invalid_token"'),
        ({"Authorization": "Basic c2ltOnNpbQ=="}, "Bearer"),
    ],
    ids=["missing", "unknown-token", "basic"],
)
def test_missing_or_invalid_token_401(sim: Simulator, headers: dict[str, str], challenge: str) -> None:
    """No token, an unknown token or another scheme get 401 with Amili's error body."""
    invoice_id = sim.amili_collection.create_invoice()
    response = amili_no.get_invoice(sim, invoice_id, headers)
    amili_no.assert_amili_error(response, 401, "Unauthorized")
    assert response.headers["WWW-Authenticate"] == challenge


def test_arm_token_is_not_valid_for_collection(sim: Simulator) -> None:
    """A token obtained with the ARM client is refused by the collection API."""
    invoice_id = sim.amili_collection.create_invoice()
    arm_token = common.new_token(sim, common.ARM_CLIENT)
    amili_no.assert_amili_error(amili_no.get_invoice(sim, invoice_id, common.bearer(arm_token)), 401, "Unauthorized")
    assert sim.amili_arm.tokens_issued == 1 and sim.amili_collection.tokens_issued == 0


def test_expired_token_401_then_new_token_works(sim: Simulator) -> None:
    """Past its real-time expiry a token gets 401 "expired"; a fresh token works again."""
    invoice_id = sim.amili_collection.create_invoice()
    before, expired = common.before_and_after_expiry(
        sim,
        sim.amili_collection,
        common.COLLECTION_CLIENT,
        amili_no.TTL,
        lambda headers: amili_no.get_invoice(sim, invoice_id, headers),
    )
    assert before.status_code == 200
    amili_no.assert_amili_error(expired, 401, "Unauthorized")
    assert "expired" in expired.json()["errors"][0]["message"]
    fresh = common.bearer(common.new_token(sim, common.COLLECTION_CLIENT))
    assert amili_no.get_invoice(sim, invoice_id, fresh).status_code == 200


def test_expire_tokens_python_and_admin(sim: Simulator) -> None:
    """expire_tokens() and POST /_sim/amili_collection/tokens/expire invalidate issued tokens."""
    invoice_id = sim.amili_collection.create_invoice()
    first = common.new_token(sim, common.COLLECTION_CLIENT)
    assert sim.amili_collection.expire_tokens() == 1
    amili_no.assert_amili_error(amili_no.get_invoice(sim, invoice_id, common.bearer(first)), 401, "Unauthorized")
    second = common.new_token(sim, common.COLLECTION_CLIENT)
    assert amili_no.get_invoice(sim, invoice_id, common.bearer(second)).status_code == 200
    expired = requests.post(f"{sim.url}/_sim/amili_collection/tokens/expire", timeout=common.TIMEOUT)
    assert expired.status_code == 200 and expired.json() == {"expired": 1, "tokens_issued": 2}
    amili_no.assert_amili_error(amili_no.get_invoice(sim, invoice_id, common.bearer(second)), 401, "Unauthorized")
    tokens = requests.get(f"{sim.url}/_sim/amili_collection/tokens", timeout=common.TIMEOUT).json()
    assert tokens == {"tokens_issued": 2, "active": 0}


def test_other_org_403_and_unknown_ids_404(sim: Simulator, auth: dict[str, str]) -> None:
    """Another org in the path gets 403; unknown invoice and batch ids get 404, all in Amili's shape."""
    invoice_id = sim.amili_collection.create_invoice()
    batch_id = sim.amili_collection.create_batch()
    amili_no.assert_amili_error(amili_no.get_invoice(sim, invoice_id, auth, org=amili_no.OTHER_ORG), 403, "Forbidden")
    amili_no.assert_amili_error(amili_no.api_get(sim, f"/orgs/{amili_no.OTHER_ORG}/cases", auth), 403, "Forbidden")
    amili_no.assert_amili_error(
        amili_no.api_get(sim, f"/orgs/{amili_no.OTHER_ORG}/batches/{batch_id}", auth), 403, "Forbidden"
    )
    amili_no.assert_amili_error(
        amili_no.get_invoice(sim, "00000000-0000-4000-8000-000000000000", auth), 404, "NotFound"
    )
    amili_no.assert_amili_error(
        amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/batches/{invoice_id}", auth), 404, "NotFound"
    )
    # Ids are GUIDs, matched case-insensitively like .NET does.
    assert amili_no.get_invoice(sim, invoice_id.upper(), auth, org=amili_no.ORG.upper()).status_code == 200
