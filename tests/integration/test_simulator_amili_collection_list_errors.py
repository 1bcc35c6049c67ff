"""Amili Norway's organisation invoice list: bad queries, auth and faults."""

from __future__ import annotations

import base64

import pytest
import requests

from simulator import Simulator
from tests.sim import amili_no, common

sim = common.sim_fixture(options=common.NO_AMILI_NO_SEED)
auth = common.token_fixture(common.COLLECTION_CLIENT)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"PageToken": "garbage!"}, "PageToken"),
        ({"PageToken": base64.urlsafe_b64encode(b"after:3").decode()}, "PageToken"),
        ({"PageToken": base64.urlsafe_b64encode(b"invoices:1:2025-05-07T14:00:00Z/x").decode()}, "PageToken"),
        ({"PageToken": base64.urlsafe_b64encode(b"invoices:2:2025-13-07T14:00:00Z/x").decode()}, "PageToken"),
        ({"PageSize": "ten"}, "PageSize"),
        ({"PageSize": "0"}, "PageSize"),
        ({"PageSize": "-5"}, "PageSize"),
        ({"PageSize": "2.5"}, "PageSize"),
        ({"From": "yesterday"}, "From"),
        ({"To": "2025-13-01"}, "To"),
        ({"To": "2025-05-07T25:00"}, "To"),
    ],
    ids=[
        "token-garbage", "token-of-cases", "token-page-1", "token-bad-date", "size-text", "size-0", "size-negative",
        "size-fraction", "from-word", "to-month-13", "to-hour-25",
    ],
)  # fmt: skip
def test_bad_query_400_names_the_parameter(
    sim: Simulator, auth: dict[str, str], params: dict[str, str], parameter: str
) -> None:
    """Malformed paging or date parameters get 400 BadRequest in Amili's error shape, naming the parameter."""
    sim.amili_collection.create_invoice()
    amili_no.assert_bad_request(amili_no.api_get(sim, amili_no.LIST, auth, params), parameter)


def test_a_cases_token_is_not_an_invoice_token(sim: Simulator, auth: dict[str, str]) -> None:
    """The cases list's real nextPageToken is refused by the invoice list (and vice versa)."""
    for _ in range(3):
        sim.amili_collection.create_invoice()
    cases = amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/cases", auth, {"PageSize": 1}).json()
    cases_token = cases["summary"]["nextPageToken"]
    assert cases_token
    amili_no.assert_bad_request(amili_no.api_get(sim, amili_no.LIST, auth, {"PageToken": cases_token}), "PageToken")
    invoices_token = amili_no.list_page(sim, auth, PageSize=1)["summary"]["nextPageToken"]
    assert amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/cases", auth, {"PageToken": invoices_token}).status_code == 400


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic c2ltOnNpbQ=="}],
    ids=["missing", "unknown", "basic"],
)
def test_without_a_valid_token_401(sim: Simulator, headers: dict[str, str]) -> None:
    """No or a bad token: 401 in Amili's error shape, with a Bearer challenge, as the item routes answer."""
    sim.amili_collection.create_invoice()
    response = amili_no.api_get(sim, amili_no.LIST, headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.json()
    assert body["summary"] == {"status": "ERROR"} and body["errors"][0]["code"] == "Unauthorized"
    item = amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/invoices/{sim.amili_collection.invoices()[0]['id']}", headers)
    assert item.status_code == 401 and item.headers["WWW-Authenticate"] == response.headers["WWW-Authenticate"]


def test_arm_token_expired_token_and_other_org(sim: Simulator, auth: dict[str, str]) -> None:
    """An ARM token and an expired token get 401; another organisation 403, like the item routes."""
    sim.amili_collection.create_invoice()
    assert (
        amili_no.api_get(sim, amili_no.LIST, common.bearer(common.new_token(sim, common.ARM_CLIENT))).status_code == 401
    )
    other = amili_no.api_get(sim, f"/orgs/{amili_no.OTHER_ORG}/invoices", auth)
    assert other.status_code == 403 and other.json()["errors"][0]["code"] == "Forbidden"
    # Org ids are GUIDs, matched case-insensitively.
    assert amili_no.api_get(sim, f"/orgs/{amili_no.ORG.upper()}/invoices", auth).status_code == 200
    sim.amili_collection.expire_tokens()
    assert amili_no.api_get(sim, amili_no.LIST, auth).status_code == 401


def test_only_get_is_served(sim: Simulator, auth: dict[str, str]) -> None:
    """The list is read-only here: POST gets 405 with Allow: GET."""
    response = requests.post(f"{sim.url}{amili_no.LIST}", headers=auth, json={}, timeout=common.TIMEOUT)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"


def test_list_scoped_fault_hits_the_list_not_the_item(sim: Simulator, auth: dict[str, str]) -> None:
    """ref "list" fails list requests only; the single-invoice GET and the cases list go on working."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "503", count=2, ref="list", retry_after=3)
    assert amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/invoices/{invoice_id}", auth).status_code == 200
    assert amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/cases", auth).status_code == 200
    assert len(sim.faults.active()) == 1  # the item and cases requests did not use the fault
    first = amili_no.api_get(sim, amili_no.LIST, auth)
    assert first.status_code == 503 and first.headers["Retry-After"] == "3"
    assert amili_no.api_get(sim, amili_no.LIST, auth, {"Status": "OPEN"}).status_code == 503
    assert sim.faults.active() == []
    assert amili_no.api_get(sim, amili_no.LIST, auth).status_code == 200


def test_unscoped_and_item_faults(sim: Simulator, auth: dict[str, str]) -> None:
    """An unscoped fault hits the list too; a fault scoped to an invoice id leaves the list alone."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "500", count=1)
    assert amili_no.api_get(sim, amili_no.LIST, auth).status_code == 500
    sim.faults.add("amili_collection", "429", count=1, ref=invoice_id)
    assert amili_no.api_get(sim, amili_no.LIST, auth).status_code == 200
    assert amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/invoices/{invoice_id}", auth).status_code == 429
    # Drift reshapes the list body like any other: here the token disappears.
    sim.faults.add("amili_collection", "drift", count=1, ref="list", drop=["summary.nextPageToken"])
    assert amili_no.api_get(sim, amili_no.LIST, auth).json()["summary"] == {"status": "SUCCESS"}
    assert sim.faults.active() == []


def test_page_scoped_fault_hits_only_that_page(sim: Simulator, auth: dict[str, str]) -> None:
    """ref "list:2" fails the page opened by page 1's token, not page 1 or 3."""
    for _ in range(6):
        sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "404", count=1, ref="list:2")
    first = amili_no.list_page(sim, auth, PageSize=2)
    token = first["summary"]["nextPageToken"]
    failed = amili_no.api_get(sim, amili_no.LIST, auth, {"PageSize": 2, "PageToken": token})
    assert failed.status_code == 404 and failed.json()["errors"][0]["code"] == "NotFound"
    second = amili_no.list_page(sim, auth, PageSize=2, PageToken=token)
    third = amili_no.list_page(sim, auth, PageSize=2, PageToken=second["summary"]["nextPageToken"])
    assert third["summary"]["nextPageToken"] is None
    assert len({i["id"] for body in (first, second, third) for i in body["data"]}) == 6
    # list:1 is the first page, asked without a token.
    sim.faults.add("amili_collection", "500", count=1, ref="list:1")
    assert amili_no.api_get(sim, amili_no.LIST, auth, {"PageSize": 2, "PageToken": token}).status_code == 200
    assert amili_no.api_get(sim, amili_no.LIST, auth, {"PageSize": 2}).status_code == 500
    assert sim.faults.active() == []


def test_bad_tokens_do_not_consume_list_faults(sim: Simulator, auth: dict[str, str]) -> None:
    """Faults apply after authentication, as on the item routes."""
    sim.faults.add("amili_collection", "500", count=1, ref="list")
    assert amili_no.api_get(sim, amili_no.LIST, {}).status_code == 401
    assert len(sim.faults.active()) == 1
    assert amili_no.api_get(sim, amili_no.LIST, auth).status_code == 500


def test_describe_names_the_list(sim: Simulator) -> None:
    """The startup description shows the list endpoint and still says when there are no invoices."""
    text = "\n".join(sim.amili_collection.describe_lines())
    assert f"GET /orgs/{amili_no.ORG}/invoices?" in text
    assert "no invoices yet" in text
    sim.amili_collection.create_invoice()
    assert "no invoices yet" not in "\n".join(sim.amili_collection.describe_lines())
