"""The fake Amili Debt.Collection invoice list, ``GET /orgs/{orgId}/invoices``, over real loopback HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorConfig

CLIENT = {"client_id": "sim-collection-client", "client_secret": "sim-collection-secret"}
ARM_CLIENT = {"client_id": "sim-arm-client", "client_secret": "sim-arm-secret"}
ORG = "497f6eca-6276-4993-bfeb-53cbbbba6f08"
OTHER_ORG = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
TIMEOUT = 5
LIST = f"/orgs/{ORG}/invoices"
#: Seed 001's invoice fields, in its order.
INVOICE_FIELDS = [
    "id", "organization", "invoiceNumber", "collectionCaseNumber", "type", "status", "createdAt", "closedAt",
    "originalInvoiceAmount", "currency", "invoiceDate", "dueDate", "ocrReferenceNumber", "uniqueSourceInvoiceId",
    "currentAmount", "paidAmount", "claims", "debtors",
]  # fmt: skip


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A frozen-clock simulator with no seeded Amili items, on a free port."""
    options = {"amili_collection_seed": 0, "amili_arm_seed": 0}
    simulator = Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, options=options)).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def new_token(sim: Simulator, client: dict[str, str] = CLIENT) -> str:
    response = requests.post(f"{sim.url}/token", data={"grant_type": "client_credentials", **client}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(sim: Simulator) -> dict[str, str]:
    """Bearer headers with a fresh collection token."""
    return bearer(new_token(sim))


def api_get(
    sim: Simulator, path: str, headers: dict[str, str], params: dict[str, Any] | None = None
) -> requests.Response:
    return requests.get(f"{sim.url}{path}", headers=headers, params=params, timeout=TIMEOUT)


def list_page(sim: Simulator, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    """One page of the list, checked to have the documented envelope."""
    response = api_get(sim, LIST, headers, params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert list(body) == ["summary", "data"]
    assert list(body["summary"]) == ["status", "nextPageToken"] and body["summary"]["status"] == "SUCCESS"
    assert isinstance(body["data"], list)
    return body


def all_pages(sim: Simulator, headers: dict[str, str], **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of one listing, following nextPageToken until it is null."""
    pages: list[list[dict[str, Any]]] = []
    token = None
    while True:
        body = list_page(sim, headers, **params, **({} if token is None else {"PageToken": token}))
        pages.append(body["data"])
        token = body["summary"]["nextPageToken"]
        if token is None:
            return pages
        assert isinstance(token, str) and token
        assert len(pages) < 50, "nextPageToken never ran out"


def ids(sim: Simulator, headers: dict[str, str], **params: Any) -> list[str]:
    return [invoice["id"] for page in all_pages(sim, headers, **params) for invoice in page]


def single(sim: Simulator, invoice_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = api_get(sim, f"/orgs/{ORG}/invoices/{invoice_id}", headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def assert_bad_request(response: requests.Response, parameter: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["summary"] == {"status": "ERROR"}
    assert len(body["errors"]) == 1 and body["errors"][0]["code"] == "BadRequest"
    assert parameter in body["errors"][0]["message"]


def next_stage(sim: Simulator, stages: int = 1) -> None:
    sim.clock.advance(sim.config.stage_seconds * stages)


# ---- paging -----------------------------------------------------------------------


def test_paging_through_60_gives_25_25_10_each_once(sim: Simulator, auth: dict[str, str]) -> None:
    """PageSize 25 over 60 invoices: three pages, every invoice once, in (createdAt, id) order."""
    created = []
    for index in range(60):
        # Some invoices share a createdAt second and some do not, so both parts of the order count.
        if index % 7 == 6:
            sim.clock.advance(1)
        created.append(sim.amili_collection.create_invoice())
    pages = all_pages(sim, auth, PageSize=25)
    assert [len(page) for page in pages] == [25, 25, 10]
    listed = [invoice["id"] for page in pages for invoice in page]
    assert len(set(listed)) == 60 and set(listed) == set(created)
    keys = [(invoice["createdAt"], invoice["id"]) for page in pages for invoice in page]
    assert keys == sorted(keys)
    assert len({created_at for created_at, _ in keys}) > 1
    # Without PageSize a page holds 25.
    first = list_page(sim, auth)
    assert len(first["data"]) == 25 and first["summary"]["nextPageToken"] is not None


def test_one_page_and_empty_list_have_null_token(sim: Simulator, auth: dict[str, str]) -> None:
    """nextPageToken is null when everything fits, including when nothing matches."""
    empty = list_page(sim, auth)
    assert empty["data"] == [] and empty["summary"]["nextPageToken"] is None
    created = [sim.amili_collection.create_invoice() for _ in range(3)]
    body = list_page(sim, auth, PageSize=3)
    assert sorted(i["id"] for i in body["data"]) == sorted(created)
    assert body["summary"]["nextPageToken"] is None


def test_page_size_is_clamped_at_100(sim: Simulator, auth: dict[str, str]) -> None:
    """PageSize above 100 gives pages of 100; names bind case-insensitively."""
    for _ in range(120):
        sim.amili_collection.create_invoice()
    assert [len(page) for page in all_pages(sim, auth, PageSize=500)] == [100, 20]
    assert [len(page) for page in all_pages(sim, auth, pagesize="101")] == [100, 20]
    assert [len(page) for page in all_pages(sim, auth, PageSize=100)] == [100, 20]
    assert len(list_page(sim, auth, PageSize=1)["data"]) == 1


def test_invoice_created_while_paging_neither_repeats_nor_skips(sim: Simulator, auth: dict[str, str]) -> None:
    """The keyset cursor: a new invoice sorting before the cursor does not shift the next pages."""
    created = {sim.amili_collection.create_invoice() for _ in range(60)}
    first = list_page(sim, auth, PageSize=25)
    # Same createdAt (the clock is frozen) and "." sorts before every hex digit: this invoice lands
    # first in the order, ahead of all that page 1 sent. An offset cursor would repeat one on page 2.
    early = sim.amili_collection.create_invoice("0.early")
    assert ids(sim, auth)[0] == early
    second = list_page(sim, auth, PageSize=25, PageToken=first["summary"]["nextPageToken"])
    # And one created later than everything goes at the end, so the client still reaches it.
    sim.clock.advance(1)
    late = sim.amili_collection.create_invoice()
    third = list_page(sim, auth, PageSize=25, PageToken=second["summary"]["nextPageToken"])
    assert third["summary"]["nextPageToken"] is None
    listed = [i["id"] for body in (first, second, third) for i in body["data"]]
    assert [len(body["data"]) for body in (first, second, third)] == [25, 25, 11]
    assert len(listed) == len(set(listed))
    assert set(listed) == created | {late}
    assert early not in listed and listed[-1] == late


def test_token_survives_a_changed_page_size(sim: Simulator, auth: dict[str, str]) -> None:
    """The cursor holds a position, not a page size: page 2 may ask for a different size."""
    for _ in range(10):
        sim.amili_collection.create_invoice()
    everything = ids(sim, auth)
    first = list_page(sim, auth, PageSize=3)
    rest = list_page(sim, auth, PageSize=100, PageToken=first["summary"]["nextPageToken"])
    assert [i["id"] for i in first["data"] + rest["data"]] == everything


# ---- bodies -----------------------------------------------------------------------


def test_each_element_is_the_single_invoice_data(sim: Simulator, auth: dict[str, str]) -> None:
    """Every listed invoice equals what GET /orgs/{orgId}/invoices/{id} gives as its data, stage by stage."""
    amili = sim.amili_collection
    made = [
        amili.create_invoice(),
        amili.create_invoice(legacy=True),
        amili.create_invoice("custom-7", scenario="paused"),
        amili.create_invoice(scenario="withdrawn", legacy=True),
    ]
    for _ in range(5):
        listed = {i["id"]: i for page in all_pages(sim, auth, PageSize=2) for i in page}
        assert set(listed) == set(made)
        for invoice_id in made:
            assert list(listed[invoice_id]) == INVOICE_FIELDS
            assert listed[invoice_id] == single(sim, invoice_id, auth)
        next_stage(sim)
    # By now the lives have moved: the comparison covered closed and paused bodies, not only fresh ones.
    assert {listed[i]["status"] for i in made} == {"CLOSED", "Closed", "PAUSED", "Withdrawn"}


# ---- filters ----------------------------------------------------------------------


def test_status_filter_either_spelling_and_closing_leaves_open(sim: Simulator, auth: dict[str, str]) -> None:
    """Status matches OPEN and Open alike; an invoice that closes drops out of Status=OPEN."""
    amili = sim.amili_collection
    closing = amili.create_invoice()
    next_stage(sim, 3)
    legacy = amili.create_invoice(legacy=True)
    paused = amili.create_invoice(scenario="paused")
    withdrawn = amili.create_invoice(scenario="withdrawn")
    everyone = [closing, legacy, paused, withdrawn]
    assert sorted(ids(sim, auth, Status="OPEN")) == sorted(everyone)
    assert sorted(ids(sim, auth, Status="Open")) == sorted(everyone)
    assert ids(sim, auth, Status="CLOSED") == []

    next_stage(sim)  # closing reaches CLOSED, withdrawn WITHDRAWN; the others stay open
    assert single(sim, closing, auth)["status"] == "CLOSED"
    assert sorted(ids(sim, auth, Status="OPEN")) == sorted([legacy, paused])
    assert sorted(ids(sim, auth, status="open")) == sorted([legacy, paused])
    assert ids(sim, auth, Status="Closed") == [closing]
    assert ids(sim, auth, Status="WITHDRAWN") == [withdrawn]
    assert sorted(ids(sim, auth, Status="CLOSED,WITHDRAWN")) == sorted([closing, withdrawn])
    assert sorted(ids(sim, auth, Status=["CLOSED", "WITHDRAWN"])) == sorted([closing, withdrawn])
    assert sorted(ids(sim, auth)) == sorted(everyone)


def test_type_invoice_number_source_and_customer_filters(sim: Simulator, auth: dict[str, str]) -> None:
    """Type is case-insensitive; InvoiceNumber, UniqueSourceInvoiceId and CustomerNumber match exactly."""
    amili = sim.amili_collection
    early = amili.create_invoice()
    next_stage(sim)
    fresh = amili.create_invoice()
    other = amili.create_invoice(legacy=True)
    # early is at PAYMENT_REMINDER now; the two fresh ones at NOTICE.
    assert ids(sim, auth, Type="PAYMENT_REMINDER") == [early]
    assert ids(sim, auth, Type="payment_reminder") == [early]
    assert sorted(ids(sim, auth, Type="NOTICE")) == sorted([fresh, other])
    assert ids(sim, auth, Type="COLLECTION_NOTICE") == []

    body = single(sim, fresh, auth)
    assert ids(sim, auth, InvoiceNumber=body["invoiceNumber"]) == [fresh]
    assert ids(sim, auth, InvoiceNumber=body["invoiceNumber"][:-1]) == []  # no prefix matching
    assert ids(sim, auth, UniqueSourceInvoiceId=body["uniqueSourceInvoiceId"]) == [fresh]
    assert ids(sim, auth, UniqueSourceInvoiceId=body["uniqueSourceInvoiceId"].upper()) == []
    customer = single(sim, other, auth)["debtors"][0]["customerNumber"]
    assert ids(sim, auth, CustomerNumber=customer) == [other]
    assert ids(sim, auth, CustomerNumber="000000") == []
    # Filters combine.
    assert ids(sim, auth, Type="NOTICE", InvoiceNumber=body["invoiceNumber"]) == [fresh]
    assert ids(sim, auth, Type="PAYMENT_REMINDER", InvoiceNumber=body["invoiceNumber"]) == []


def test_from_to_bound_created_at_inclusively(sim: Simulator, auth: dict[str, str]) -> None:
    """From/To take dates or date-times and include both ends; a date To covers the whole day."""
    amili = sim.amili_collection
    first = amili.create_invoice()
    sim.clock.advance(30)
    second = amili.create_invoice()
    sim.clock.advance(24 * 3600)
    third = amili.create_invoice()
    stamps = [single(sim, i, auth)["createdAt"] for i in (first, second, third)]
    assert stamps == ["2025-05-07T14:00:00Z", "2025-05-07T14:00:30Z", "2025-05-08T14:00:30Z"]

    assert ids(sim, auth, From=stamps[1]) == [second, third]
    assert ids(sim, auth, To=stamps[1]) == [first, second]
    assert ids(sim, auth, From=stamps[1], To=stamps[1]) == [second]
    assert ids(sim, auth, From="2025-05-07T14:00:01", To="2025-05-07T14:00:29Z") == []
    assert ids(sim, auth, To="2025-05-07") == [first, second]
    assert ids(sim, auth, From="2025-05-08") == [third]
    assert ids(sim, auth, From="2025-05-07", To="2025-05-08") == [first, second, third]
    assert ids(sim, auth, To="2025-05-06") == []
    # Offsets convert to UTC: 16:00:30+02:00 is 14:00:30Z.
    assert ids(sim, auth, From="2025-05-07T16:00:30+02:00", To="2025-05-07T16:00:30+02:00") == [second]
    assert ids(sim, auth, From=stamps[2], To=stamps[0]) == []


# ---- errors and auth --------------------------------------------------------------


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
    assert_bad_request(api_get(sim, LIST, auth, params), parameter)


def test_a_cases_token_is_not_an_invoice_token(sim: Simulator, auth: dict[str, str]) -> None:
    """The cases list's real nextPageToken is refused by the invoice list (and vice versa)."""
    for _ in range(3):
        sim.amili_collection.create_invoice()
    cases = api_get(sim, f"/orgs/{ORG}/cases", auth, {"PageSize": 1}).json()
    cases_token = cases["summary"]["nextPageToken"]
    assert cases_token
    assert_bad_request(api_get(sim, LIST, auth, {"PageToken": cases_token}), "PageToken")
    invoices_token = list_page(sim, auth, PageSize=1)["summary"]["nextPageToken"]
    assert api_get(sim, f"/orgs/{ORG}/cases", auth, {"PageToken": invoices_token}).status_code == 400


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic c2ltOnNpbQ=="}],
    ids=["missing", "unknown", "basic"],
)
def test_without_a_valid_token_401(sim: Simulator, headers: dict[str, str]) -> None:
    """No or a bad token: 401 in Amili's error shape, with a Bearer challenge, as the item routes answer."""
    sim.amili_collection.create_invoice()
    response = api_get(sim, LIST, headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.json()
    assert body["summary"] == {"status": "ERROR"} and body["errors"][0]["code"] == "Unauthorized"
    item = api_get(sim, f"/orgs/{ORG}/invoices/{sim.amili_collection.invoices()[0]['id']}", headers)
    assert item.status_code == 401 and item.headers["WWW-Authenticate"] == response.headers["WWW-Authenticate"]


def test_arm_token_expired_token_and_other_org(sim: Simulator, auth: dict[str, str]) -> None:
    """An ARM token and an expired token get 401; another organisation 403, like the item routes."""
    sim.amili_collection.create_invoice()
    assert api_get(sim, LIST, bearer(new_token(sim, ARM_CLIENT))).status_code == 401
    other = api_get(sim, f"/orgs/{OTHER_ORG}/invoices", auth)
    assert other.status_code == 403 and other.json()["errors"][0]["code"] == "Forbidden"
    # Org ids are GUIDs, matched case-insensitively.
    assert api_get(sim, f"/orgs/{ORG.upper()}/invoices", auth).status_code == 200
    sim.amili_collection.expire_tokens()
    assert api_get(sim, LIST, auth).status_code == 401


def test_only_get_is_served(sim: Simulator, auth: dict[str, str]) -> None:
    """The list is read-only here: POST gets 405 with Allow: GET."""
    response = requests.post(f"{sim.url}{LIST}", headers=auth, json={}, timeout=TIMEOUT)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"


# ---- faults -----------------------------------------------------------------------


def test_list_scoped_fault_hits_the_list_not_the_item(sim: Simulator, auth: dict[str, str]) -> None:
    """ref "list" fails list requests only; the single-invoice GET and the cases list go on working."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "503", count=2, ref="list", retry_after=3)
    assert api_get(sim, f"/orgs/{ORG}/invoices/{invoice_id}", auth).status_code == 200
    assert api_get(sim, f"/orgs/{ORG}/cases", auth).status_code == 200
    assert len(sim.faults.active()) == 1  # the item and cases requests did not use the fault
    first = api_get(sim, LIST, auth)
    assert first.status_code == 503 and first.headers["Retry-After"] == "3"
    assert api_get(sim, LIST, auth, {"Status": "OPEN"}).status_code == 503
    assert sim.faults.active() == []
    assert api_get(sim, LIST, auth).status_code == 200


def test_unscoped_and_item_faults(sim: Simulator, auth: dict[str, str]) -> None:
    """An unscoped fault hits the list too; a fault scoped to an invoice id leaves the list alone."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "500", count=1)
    assert api_get(sim, LIST, auth).status_code == 500
    sim.faults.add("amili_collection", "429", count=1, ref=invoice_id)
    assert api_get(sim, LIST, auth).status_code == 200
    assert api_get(sim, f"/orgs/{ORG}/invoices/{invoice_id}", auth).status_code == 429
    # Drift reshapes the list body like any other: here the token disappears.
    sim.faults.add("amili_collection", "drift", count=1, ref="list", drop=["summary.nextPageToken"])
    assert api_get(sim, LIST, auth).json()["summary"] == {"status": "SUCCESS"}
    assert sim.faults.active() == []


def test_page_scoped_fault_hits_only_that_page(sim: Simulator, auth: dict[str, str]) -> None:
    """ref "list:2" fails the page opened by page 1's token, not page 1 or 3."""
    for _ in range(6):
        sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "404", count=1, ref="list:2")
    first = list_page(sim, auth, PageSize=2)
    token = first["summary"]["nextPageToken"]
    failed = api_get(sim, LIST, auth, {"PageSize": 2, "PageToken": token})
    assert failed.status_code == 404 and failed.json()["errors"][0]["code"] == "NotFound"
    second = list_page(sim, auth, PageSize=2, PageToken=token)
    third = list_page(sim, auth, PageSize=2, PageToken=second["summary"]["nextPageToken"])
    assert third["summary"]["nextPageToken"] is None
    assert len({i["id"] for body in (first, second, third) for i in body["data"]}) == 6
    # list:1 is the first page, asked without a token.
    sim.faults.add("amili_collection", "500", count=1, ref="list:1")
    assert api_get(sim, LIST, auth, {"PageSize": 2, "PageToken": token}).status_code == 200
    assert api_get(sim, LIST, auth, {"PageSize": 2}).status_code == 500
    assert sim.faults.active() == []


def test_bad_tokens_do_not_consume_list_faults(sim: Simulator, auth: dict[str, str]) -> None:
    """Faults apply after authentication, as on the item routes."""
    sim.faults.add("amili_collection", "500", count=1, ref="list")
    assert api_get(sim, LIST, {}).status_code == 401
    assert len(sim.faults.active()) == 1
    assert api_get(sim, LIST, auth).status_code == 500


def test_describe_names_the_list(sim: Simulator) -> None:
    """The startup description shows the list endpoint and still says when there are no invoices."""
    text = "\n".join(sim.amili_collection.describe_lines())
    assert f"GET /orgs/{ORG}/invoices?" in text
    assert "no invoices yet" in text
    sim.amili_collection.create_invoice()
    assert "no invoices yet" not in "\n".join(sim.amili_collection.describe_lines())
