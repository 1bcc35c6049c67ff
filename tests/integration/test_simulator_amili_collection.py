"""The fake Amili Debt.Collection API and its Identiverse token service over real loopback HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorConfig
from simulator.identity import TokenService

CLIENT = {"client_id": "sim-collection-client", "client_secret": "sim-collection-secret"}
ARM_CLIENT = {"client_id": "sim-arm-client", "client_secret": "sim-arm-secret"}
ORG = "497f6eca-6276-4993-bfeb-53cbbbba6f08"
OTHER_ORG = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
TTL = 120
TIMEOUT = 5
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: Seed 001's invoice fields, in its order.
INVOICE_FIELDS = [
    "id", "organization", "invoiceNumber", "collectionCaseNumber", "type", "status", "createdAt", "closedAt",
    "originalInvoiceAmount", "currency", "invoiceDate", "dueDate", "ocrReferenceNumber", "uniqueSourceInvoiceId",
    "currentAmount", "paidAmount", "claims", "debtors",
]  # fmt: skip
DEBTOR_FIELDS = [
    "type", "firstname", "lastname", "name", "customerNumber", "identificationNumber", "organizationNumber",
    "dateOfBirth", "emails", "phoneNumbers", "addresses",
]  # fmt: skip
CASE_FIELDS = [
    "id", "caseNumber", "organizationId", "status", "type", "createdAt", "closedAt", "originalAmount",
    "currentAmount", "paidAmount", "currency", "invoiceNumber", "uniqueSourceInvoiceId", "customerNumber",
]  # fmt: skip


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A frozen-clock simulator with no seeded Amili items, on a free port."""
    options = {"amili_collection_seed": 0, "amili_arm_seed": 0}
    simulator = Simulator(
        SimulatorConfig(port=0, speed=0, seed_orders=0, token_ttl_seconds=TTL, options=options)
    ).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def post_token(sim: Simulator, form: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    data = {"grant_type": "client_credentials", **CLIENT} if form is None else form
    return requests.post(f"{sim.url}/token", data=data, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


def new_token(sim: Simulator, client: dict[str, str] = CLIENT) -> str:
    response = post_token(sim, {"grant_type": "client_credentials", **client})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_get(
    sim: Simulator, path: str, headers: dict[str, str], params: dict[str, Any] | None = None, timeout: float = TIMEOUT
) -> requests.Response:
    return requests.get(f"{sim.url}{path}", headers=headers, params=params, timeout=timeout)


def get_invoice(sim: Simulator, invoice_id: str, headers: dict[str, str], org: str = ORG) -> requests.Response:
    return api_get(sim, f"/orgs/{org}/invoices/{invoice_id}", headers)


def invoice_data(sim: Simulator, invoice_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = get_invoice(sim, invoice_id, headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["summary", "data"] and body["summary"] == {"status": "SUCCESS"}
    data: dict[str, Any] = body["data"]
    return data


def list_cases(sim: Simulator, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = api_get(sim, f"/orgs/{ORG}/cases", headers, params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def get_batch(sim: Simulator, batch_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = api_get(sim, f"/orgs/{ORG}/batches/{batch_id}", headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def assert_amili_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["summary"] == {"status": "ERROR"}
    assert len(body["errors"]) == 1 and body["errors"][0]["code"] == code
    assert isinstance(body["errors"][0]["message"], str) and body["errors"][0]["message"]


def next_stage(sim: Simulator) -> None:
    sim.clock.advance(sim.config.stage_seconds)


@pytest.fixture
def auth(sim: Simulator) -> dict[str, str]:
    """Bearer headers with a fresh collection token."""
    return bearer(new_token(sim))


# ---- token service --------------------------------------------------------------


def test_token_has_azure_style_body(sim: Simulator) -> None:
    """client_credentials gets the documented body: string epochs, int expires_in, no-store."""
    before = int(time.time())
    response = post_token(sim)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert list(body) == ["access_token", "token_type", "not_before", "expires_in", "expires_on", "resource"]
    assert body["token_type"] == "Bearer" and body["access_token"]
    assert isinstance(body["not_before"], str) and isinstance(body["expires_on"], str)
    assert body["expires_in"] == TTL and isinstance(body["expires_in"], int)
    assert before <= int(body["not_before"]) <= int(time.time())
    assert int(body["expires_on"]) - int(body["not_before"]) in (TTL, TTL + 1)
    assert isinstance(body["resource"], str) and body["resource"]
    assert sim.amili_collection.tokens_issued == 1


def test_token_accepts_scope_and_charset(sim: Simulator) -> None:
    """An optional scope is ignored and a charset on the form Content-Type is fine."""
    body = "grant_type=client_credentials&client_id=sim-collection-client&client_secret=sim-collection-secret"
    response = requests.post(
        f"{sim.url}/token",
        data=body + "&scope=write%3Acollection.case",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        timeout=TIMEOUT,
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
    response = post_token(sim, form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client" and response.json()["error_description"]
    assert sim.amili_collection.tokens_issued == 0


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password", **CLIENT}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", **CLIENT}, "unsupported_grant_type"),
        (CLIENT, "invalid_request"),
        ({"grant_type": "client_credentials", "client_id": "sim-collection-client"}, "invalid_request"),
    ],
    ids=["password", "authorization_code", "no-grant", "no-secret"],
)
def test_token_bad_grant_400(sim: Simulator, form: dict[str, str], error: str) -> None:
    """A wrong or missing grant_type, or a missing secret, gets 400 with the OAuth2 error."""
    response = post_token(sim, form)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_token_json_body_and_repeated_params_400(sim: Simulator) -> None:
    """A JSON (not form-encoded) body or a repeated parameter gets 400 invalid_request."""
    as_json = requests.post(f"{sim.url}/token", json={"grant_type": "client_credentials", **CLIENT}, timeout=TIMEOUT)
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = requests.post(
        f"{sim.url}/token",
        data=[("grant_type", "client_credentials"), ("client_id", "a"), ("client_id", "b"), ("client_secret", "x")],
        timeout=TIMEOUT,
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


# ---- API auth -------------------------------------------------------------------


def test_valid_token_is_reused_across_calls(sim: Simulator, auth: dict[str, str]) -> None:
    """One token serves many API calls; no new token is issued."""
    invoice_id = sim.amili_collection.create_invoice()
    for _ in range(3):
        assert get_invoice(sim, invoice_id, auth).status_code == 200
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
    response = get_invoice(sim, invoice_id, headers)
    assert_amili_error(response, 401, "Unauthorized")
    assert response.headers["WWW-Authenticate"] == challenge


def test_arm_token_is_not_valid_for_collection(sim: Simulator) -> None:
    """A token obtained with the ARM client is refused by the collection API."""
    invoice_id = sim.amili_collection.create_invoice()
    arm_token = new_token(sim, ARM_CLIENT)
    assert_amili_error(get_invoice(sim, invoice_id, bearer(arm_token)), 401, "Unauthorized")
    assert sim.amili_arm.tokens_issued == 1 and sim.amili_collection.tokens_issued == 0


def test_expired_token_401_then_new_token_works(sim: Simulator) -> None:
    """Past its real-time expiry a token gets 401 "expired"; a fresh token works again."""
    invoice_id = sim.amili_collection.create_invoice()
    service = sim.amili_collection.token_service
    start = time.time()
    service.time_fn = lambda: start
    token = new_token(sim)
    assert get_invoice(sim, invoice_id, bearer(token)).status_code == 200
    service.time_fn = lambda: start + TTL
    expired = get_invoice(sim, invoice_id, bearer(token))
    assert_amili_error(expired, 401, "Unauthorized")
    assert "expired" in expired.json()["errors"][0]["message"]
    assert get_invoice(sim, invoice_id, bearer(new_token(sim))).status_code == 200


def test_expire_tokens_python_and_admin(sim: Simulator) -> None:
    """expire_tokens() and POST /_sim/amili_collection/tokens/expire invalidate issued tokens."""
    invoice_id = sim.amili_collection.create_invoice()
    first = new_token(sim)
    assert sim.amili_collection.expire_tokens() == 1
    assert_amili_error(get_invoice(sim, invoice_id, bearer(first)), 401, "Unauthorized")
    second = new_token(sim)
    assert get_invoice(sim, invoice_id, bearer(second)).status_code == 200
    expired = requests.post(f"{sim.url}/_sim/amili_collection/tokens/expire", timeout=TIMEOUT)
    assert expired.status_code == 200 and expired.json() == {"expired": 1, "tokens_issued": 2}
    assert_amili_error(get_invoice(sim, invoice_id, bearer(second)), 401, "Unauthorized")
    tokens = requests.get(f"{sim.url}/_sim/amili_collection/tokens", timeout=TIMEOUT).json()
    assert tokens == {"tokens_issued": 2, "active": 0}


def test_other_org_403_and_unknown_ids_404(sim: Simulator, auth: dict[str, str]) -> None:
    """Another org in the path gets 403; unknown invoice and batch ids get 404, all in Amili's shape."""
    invoice_id = sim.amili_collection.create_invoice()
    batch_id = sim.amili_collection.create_batch()
    assert_amili_error(get_invoice(sim, invoice_id, auth, org=OTHER_ORG), 403, "Forbidden")
    assert_amili_error(api_get(sim, f"/orgs/{OTHER_ORG}/cases", auth), 403, "Forbidden")
    assert_amili_error(api_get(sim, f"/orgs/{OTHER_ORG}/batches/{batch_id}", auth), 403, "Forbidden")
    assert_amili_error(get_invoice(sim, "00000000-0000-4000-8000-000000000000", auth), 404, "NotFound")
    assert_amili_error(api_get(sim, f"/orgs/{ORG}/batches/{invoice_id}", auth), 404, "NotFound")
    # Ids are GUIDs, matched case-insensitively like .NET does.
    assert get_invoice(sim, invoice_id.upper(), auth, org=ORG.upper()).status_code == 200


# ---- invoice lives --------------------------------------------------------------


def test_paid_life(sim: Simulator, auth: dict[str, str]) -> None:
    """A "paid" invoice: NOTICE, PAYMENT_REMINDER, COLLECTION_NOTICE, part payment, CLOSED."""
    invoice_id = sim.amili_collection.create_invoice()
    assert UUID.match(invoice_id)
    notice = invoice_data(sim, invoice_id, auth)
    assert list(notice) == INVOICE_FIELDS
    assert notice["id"] == invoice_id
    assert notice["organization"]["id"] == ORG and list(notice["organization"]) == ["id", "organizationNumber", "name"]
    assert (notice["status"], notice["type"]) == ("OPEN", "NOTICE")
    assert (notice["originalInvoiceAmount"], notice["currentAmount"], notice["paidAmount"]) == (1000, 1000, 0)
    assert notice["closedAt"] is None and notice["currency"] == "NOK"
    for field in ("createdAt", "invoiceDate", "dueDate"):
        assert ISO_Z.match(notice[field])
    assert notice["invoiceDate"] < notice["dueDate"] < notice["createdAt"]
    assert notice["claims"] == [
        {"type": "PRINCIPAL", "originalAmount": 1000, "currentAmount": 1000, "paidAmount": 0, "currency": "NOK"}
    ]
    [debtor] = notice["debtors"]
    assert list(debtor) == DEBTOR_FIELDS and debtor["type"] == "Private"
    assert list(debtor["addresses"][0]) == ["street", "city", "zipCode", "countryCode"]
    assert debtor["emails"] == [{"value": "ola.nordmann@example.no"}]

    next_stage(sim)
    reminder = invoice_data(sim, invoice_id, auth)
    assert (reminder["status"], reminder["type"], reminder["currentAmount"]) == ("OPEN", "PAYMENT_REMINDER", 1070)
    assert [c["type"] for c in reminder["claims"]] == ["PRINCIPAL", "REMINDER_FEE"]
    assert reminder["claims"][1]["currentAmount"] == 70

    next_stage(sim)
    collection = invoice_data(sim, invoice_id, auth)
    assert (collection["type"], collection["currentAmount"], collection["paidAmount"]) == (
        "COLLECTION_NOTICE", 1140, 0,
    )  # fmt: skip
    assert len(collection["claims"]) == 3

    next_stage(sim)
    partial = invoice_data(sim, invoice_id, auth)
    assert (partial["status"], partial["currentAmount"], partial["paidAmount"]) == ("OPEN", 640, 500)
    assert sum(c["paidAmount"] for c in partial["claims"]) == 500
    assert partial["closedAt"] is None

    next_stage(sim)
    paid = invoice_data(sim, invoice_id, auth)
    assert (paid["status"], paid["currentAmount"], paid["paidAmount"]) == ("CLOSED", 0, 1140)
    assert ISO_Z.match(paid["closedAt"]) and paid["closedAt"] > paid["createdAt"]
    assert all(c["currentAmount"] == 0 and c["paidAmount"] == c["originalAmount"] for c in paid["claims"])
    assert paid["createdAt"] == notice["createdAt"]

    sim.clock.advance(sim.config.stage_seconds * 10)
    assert invoice_data(sim, invoice_id, auth) == paid
    [info] = sim.amili_collection.invoices()
    assert (info["stage"], info["final_stage"], info["status"]) == (4, 4, "CLOSED")


def test_paused_life(sim: Simulator, auth: dict[str, str]) -> None:
    """A "paused" invoice goes OPEN/NOTICE, PAYMENT_REMINDER, then stays PAUSED and open."""
    invoice_id = sim.amili_collection.create_invoice(scenario="paused")
    assert invoice_data(sim, invoice_id, auth)["type"] == "NOTICE"
    next_stage(sim)
    assert invoice_data(sim, invoice_id, auth)["type"] == "PAYMENT_REMINDER"
    next_stage(sim)
    paused = invoice_data(sim, invoice_id, auth)
    assert (paused["status"], paused["type"], paused["currentAmount"]) == ("PAUSED", "PAYMENT_REMINDER", 1070)
    assert paused["closedAt"] is None
    sim.clock.advance(100)
    assert invoice_data(sim, invoice_id, auth) == paused


def test_withdrawn_life(sim: Simulator, auth: dict[str, str]) -> None:
    """A "withdrawn" invoice goes OPEN, then WITHDRAWN with closedAt set."""
    invoice_id = sim.amili_collection.create_invoice(scenario="withdrawn")
    assert invoice_data(sim, invoice_id, auth)["status"] == "OPEN"
    next_stage(sim)
    withdrawn = invoice_data(sim, invoice_id, auth)
    assert withdrawn["status"] == "WITHDRAWN" and ISO_Z.match(withdrawn["closedAt"])


def test_legacy_spelling(sim: Simulator, auth: dict[str, str]) -> None:
    """legacy=True spells statuses like seed 001 ("Open", "Closed"); types are unchanged."""
    invoice_id = sim.amili_collection.create_invoice(legacy=True)
    first = invoice_data(sim, invoice_id, auth)
    assert (first["status"], first["type"]) == ("Open", "NOTICE")
    sim.amili_collection.set_stage(invoice_id, 4)
    assert invoice_data(sim, invoice_id, auth)["status"] == "Closed"
    paused = sim.amili_collection.create_invoice(scenario="paused", legacy=True)
    withdrawn = sim.amili_collection.create_invoice(scenario="withdrawn", legacy=True)
    sim.clock.advance(100)
    assert invoice_data(sim, paused, auth)["status"] == "Paused"
    assert invoice_data(sim, withdrawn, auth)["status"] == "Withdrawn"


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator, auth: dict[str, str]) -> None:
    """Polling twice within one stage returns exactly the same bytes, for invoices, cases and batches."""
    invoice_id = sim.amili_collection.create_invoice()
    batch_id = sim.amili_collection.create_batch(scenario="partial")
    sim.clock.advance(sim.config.stage_seconds * 2.2)
    paths = [f"/orgs/{ORG}/invoices/{invoice_id}", f"/orgs/{ORG}/cases", f"/orgs/{ORG}/batches/{batch_id}"]
    first = [api_get(sim, path, auth).content for path in paths]
    sim.clock.advance(sim.config.stage_seconds * 0.5)
    assert [api_get(sim, path, auth).content for path in paths] == first


# ---- cases ----------------------------------------------------------------------


def test_cases_follow_the_invoice_life(sim: Simulator, auth: dict[str, str]) -> None:
    """Each invoice is one case with the case fields and the same status, type and amounts."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.clock.advance(sim.config.stage_seconds * 3)
    body = list_cases(sim, auth)
    assert body["summary"] == {"status": "SUCCESS", "nextPageToken": None}
    [case] = body["data"]
    assert list(case) == CASE_FIELDS
    invoice = invoice_data(sim, invoice_id, auth)
    assert UUID.match(case["id"]) and case["id"] != invoice_id
    assert case["caseNumber"] == invoice["collectionCaseNumber"]
    assert case["organizationId"] == ORG
    assert (case["status"], case["type"], case["currentAmount"], case["paidAmount"]) == (
        "OPEN", "COLLECTION_NOTICE", 640, 500,
    )  # fmt: skip
    assert case["originalAmount"] == 1000 and case["closedAt"] is None
    assert case["customerNumber"] == invoice["debtors"][0]["customerNumber"]
    assert case == sim.amili_collection.case_body(invoice_id)


def test_cases_filters(sim: Simulator, auth: dict[str, str]) -> None:
    """CaseNumber, Status, Type, UniqueSourceInvoiceId, CustomerNumber, SearchTerm and dates filter cases."""
    paid = sim.amili_collection.create_invoice()
    legacy = sim.amili_collection.create_invoice(legacy=True)
    sim.clock.advance(sim.config.stage_seconds * 2)
    paused = sim.amili_collection.create_invoice(scenario="paused")
    cases = {c["uniqueSourceInvoiceId"]: c for c in list_cases(sim, auth)["data"]}
    by_invoice = {i: sim.amili_collection.case_body(i)["uniqueSourceInvoiceId"] for i in (paid, legacy, paused)}

    def ids(**params: Any) -> list[str]:
        return [c["uniqueSourceInvoiceId"] for c in list_cases(sim, auth, **params)["data"]]

    assert ids(CaseNumber=cases[by_invoice[legacy]]["caseNumber"]) == [by_invoice[legacy]]
    # Status matches either spelling and several values.
    assert ids(Status="OPEN") == [by_invoice[paid], by_invoice[legacy], by_invoice[paused]]
    assert ids(Status="open", Type="COLLECTION_NOTICE") == [by_invoice[paid], by_invoice[legacy]]
    assert ids(Status="CLOSED") == []
    assert ids(Type="NOTICE,PAYMENT_REMINDER") == [by_invoice[paused]]
    assert ids(UniqueSourceInvoiceId=by_invoice[paused]) == [by_invoice[paused]]
    assert ids(CustomerNumber=cases[by_invoice[paid]]["customerNumber"]) == [by_invoice[paid]]
    assert ids(SearchTerm="kari") == [by_invoice[legacy]]
    assert ids(pagesize="1", status="OPEN") == [by_invoice[paid]]  # names bind case-insensitively
    created_late = cases[by_invoice[paused]]["createdAt"]
    assert ids(FromCreatedAt=created_late) == [by_invoice[paused]]
    assert ids(ToCreatedAt="2025-05-07T14:00:19Z") == [by_invoice[paid], by_invoice[legacy]]
    assert ids(ToCreatedAt="2025-05-07", FromCreatedAt="2025-05-07T00:00:00+00:00") == list(by_invoice.values())
    assert ids(ToCreatedAt="2025-05-06") == []


def test_cases_cursor_paging(sim: Simulator, auth: dict[str, str]) -> None:
    """PageSize limits a page; nextPageToken leads to the next one until it is null."""
    created = [sim.amili_collection.create_invoice() for _ in range(5)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"PageSize": 2} if token is None else {"PageSize": 2, "PageToken": token}
        body = list_cases(sim, auth, **params)
        pages += 1
        seen.extend(c["id"] for c in body["data"])
        token = body["summary"]["nextPageToken"]
        if token is None:
            break
    assert pages == 3
    assert seen == [sim.amili_collection.case_body(i)["id"] for i in created]
    assert len(list_cases(sim, auth)["data"]) == 5  # default page size 25


@pytest.mark.parametrize(
    "params",
    [{"PageSize": "0"}, {"PageSize": "101"}, {"PageSize": "ten"}, {"PageToken": "garbage!"},
     {"FromCreatedAt": "yesterday"}],
    ids=["size-0", "size-101", "size-text", "bad-token", "bad-date"],
)  # fmt: skip
def test_cases_bad_query_400(sim: Simulator, auth: dict[str, str], params: dict[str, str]) -> None:
    """Malformed paging or date parameters get 400 in Amili's error shape."""
    assert_amili_error(api_get(sim, f"/orgs/{ORG}/cases", auth, params), 400, "BadRequest")


# ---- batches --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "terminal", "succeeded", "failed"),
    [("success", "SUCCESS", 3, 0), ("partial", "PARTIAL", 2, 1), ("failed", "FAILED", 0, 3)],
)
def test_batch_life(
    sim: Simulator, auth: dict[str, str], scenario: str, terminal: str, succeeded: int, failed: int
) -> None:
    """A batch goes QUEUED, PROCESSING, then its terminal status with succeeded/failed entries."""
    batch_id = sim.amili_collection.create_batch(scenario=scenario)
    queued = get_batch(sim, batch_id, auth)
    assert list(queued) == [
        "batchId", "type", "status", "createdAt", "finishedAt", "organizationId", "createdBy", "succeeded", "failed",
    ]  # fmt: skip
    assert (queued["batchId"], queued["type"], queued["status"]) == (batch_id, "INVOICE", "QUEUED")
    assert queued["finishedAt"] is None and queued["succeeded"] == [] and queued["failed"] == []
    assert queued["organizationId"] == ORG and UUID.match(queued["createdBy"]) and ISO_Z.match(queued["createdAt"])
    next_stage(sim)
    processing = get_batch(sim, batch_id, auth)
    assert processing["status"] == "PROCESSING" and processing["finishedAt"] is None
    next_stage(sim)
    done = get_batch(sim, batch_id, auth)
    assert done["status"] == terminal and ISO_Z.match(done["finishedAt"]) and done["finishedAt"] > done["createdAt"]
    assert len(done["succeeded"]) == succeeded and len(done["failed"]) == failed
    for entry in done["succeeded"]:
        assert list(entry) == ["invoiceId", "invoiceNumber", "caseId"] and UUID.match(entry["invoiceId"])
    for entry in done["failed"]:
        assert list(entry) == ["reference", "errors"]
        assert entry["errors"] and set(entry["errors"][0]) == {"code", "message"}
    sim.clock.advance(100)
    assert get_batch(sim, batch_id, auth) == done


# ---- faults ---------------------------------------------------------------------


def test_fault_500_and_503(sim: Simulator, auth: dict[str, str]) -> None:
    """ "500" answers an HTML error page; "503" carries Retry-After when armed with one."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "500", count=1)
    sim.faults.add("amili_collection", "503", count=1, retry_after=4)
    first = get_invoice(sim, invoice_id, auth)
    assert first.status_code == 500 and first.headers["Content-Type"].startswith("text/html")
    second = get_invoice(sim, invoice_id, auth)
    assert second.status_code == 503 and second.headers["Retry-After"] == "4"
    assert get_invoice(sim, invoice_id, auth).status_code == 200


def test_fault_429_has_retry_after(sim: Simulator, auth: dict[str, str]) -> None:
    """A "429" fault answers Amili's error body with Retry-After."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "429", retry_after=7)
    response = get_invoice(sim, invoice_id, auth)
    assert_amili_error(response, 429, "TooManyRequests")
    assert response.headers["Retry-After"] == "7"


def test_fault_slow_trips_client_timeout(sim: Simulator, auth: dict[str, str]) -> None:
    """A "slow" fault delays the answer past a short client timeout."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "slow", delay=0.5, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sim.url}/orgs/{ORG}/invoices/{invoice_id}", headers=auth, timeout=0.2)
    assert requests.get(f"{sim.url}/orgs/{ORG}/invoices/{invoice_id}", headers=auth, timeout=0.2).status_code == 200


def test_fault_malformed_and_html(sim: Simulator, auth: dict[str, str]) -> None:
    """ "malformed" answers 200 JSON that does not parse; "html" answers a 200 HTML page."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "malformed", count=1)
    sim.faults.add("amili_collection", "html", count=1)
    broken = get_invoice(sim, invoice_id, auth)
    assert broken.status_code == 200 and broken.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    html = get_invoice(sim, invoice_id, auth)
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")


def test_fault_404_and_401_use_amili_bodies(sim: Simulator, auth: dict[str, str]) -> None:
    """ "404" and "401" faults answer in Amili's error shape even for a valid invoice."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "404", count=1)
    sim.faults.add("amili_collection", "401", count=1)
    assert_amili_error(get_invoice(sim, invoice_id, auth), 404, "NotFound")
    assert_amili_error(get_invoice(sim, invoice_id, auth), 401, "Unauthorized")
    assert get_invoice(sim, invoice_id, auth).status_code == 200


def test_faults_apply_after_auth_and_by_ref(sim: Simulator, auth: dict[str, str]) -> None:
    """Bad tokens do not consume faults; a ref-scoped fault hits only that item (or "cases")."""
    first = sim.amili_collection.create_invoice()
    second = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "500", count=1, ref=second)
    sim.faults.add("amili_collection", "503", count=1, ref="cases")
    assert get_invoice(sim, second, {"Authorization": "Bearer nope"}).status_code == 401
    assert get_invoice(sim, first, auth).status_code == 200
    assert get_invoice(sim, second, auth).status_code == 500
    assert api_get(sim, f"/orgs/{ORG}/cases", auth).status_code == 503
    assert sim.faults.active() == []


def test_token_fault_breaks_only_the_token_call(sim: Simulator, auth: dict[str, str]) -> None:
    """A fault with ref "token" fails POST /token; unscoped faults never touch the token call."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.faults.add("amili_collection", "503", count=1, ref="token")
    outage = post_token(sim)
    assert outage.status_code == 503
    assert get_invoice(sim, invoice_id, auth).status_code == 200
    sim.faults.add("amili_collection", "500")
    assert post_token(sim).status_code == 200
    assert get_invoice(sim, invoice_id, auth).status_code == 500
    sim.faults.clear()
    sim.faults.add("amili_collection", "429", count=1, ref="token", retry_after=2)
    limited = post_token(sim)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json()["error"] == "temporarily_unavailable"
    # A collection token fault leaves the ARM client's token calls alone.
    sim.faults.add("amili_collection", "500", ref="token")
    assert post_token(sim, {"grant_type": "client_credentials", **ARM_CLIENT}).status_code == 200


# ---- admin, seeding, env ----------------------------------------------------------


def test_admin_create_list_and_stage(sim: Simulator, auth: dict[str, str]) -> None:
    """Invoices and batches created, listed and staged over the admin API change what the API answers."""
    base = f"{sim.url}/_sim/amili_collection"
    created = requests.post(f"{base}/invoices", json={"id": "inv-77", "scenario": "withdrawn"}, timeout=TIMEOUT)
    assert created.status_code == 201 and created.json() == {"id": "inv-77"}
    auto = requests.post(f"{base}/invoices", json={"legacy": True}, timeout=TIMEOUT)
    assert auto.status_code == 201 and UUID.match(auto.json()["id"])
    batch = requests.post(f"{base}/batches", json={"scenario": "failed"}, timeout=TIMEOUT)
    assert batch.status_code == 201
    batch_id = batch.json()["id"]

    listed = requests.get(f"{base}/invoices", timeout=TIMEOUT).json()["invoices"]
    assert [(i["id"], i["scenario"], i["legacy"], i["status"]) for i in listed] == [
        ("inv-77", "withdrawn", False, "OPEN"), (auto.json()["id"], "paid", True, "Open"),
    ]  # fmt: skip
    staged = requests.post(f"{base}/invoices/inv-77/stage", json={"stage": 1}, timeout=TIMEOUT)
    assert staged.json() == {"id": "inv-77", "stage": 1}
    assert invoice_data(sim, "inv-77", auth)["status"] == "WITHDRAWN"
    requests.post(f"{base}/batches/{batch_id}/stage", json={"stage": 2}, timeout=TIMEOUT).close()
    assert get_batch(sim, batch_id, auth)["status"] == "FAILED"
    batches = requests.get(f"{base}/batches", timeout=TIMEOUT).json()["batches"]
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
    response = requests.post(f"{sim.url}/_sim/amili_collection{path}", json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]


def test_admin_duplicate_and_unknown_ids(sim: Simulator) -> None:
    """A duplicate id (any case) answers 400; staging an unknown id answers 404."""
    sim.amili_collection.create_invoice("dup-1")
    base = f"{sim.url}/_sim/amili_collection"
    dup = requests.post(f"{base}/batches", json={"id": "DUP-1"}, timeout=TIMEOUT)
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]
    missing = requests.post(f"{base}/invoices/nope/stage", json={"stage": 1}, timeout=TIMEOUT)
    assert missing.status_code == 404
    with pytest.raises(ValueError):
        sim.amili_collection.create_invoice(scenario="lost")
    with pytest.raises(KeyError):
        sim.amili_collection.set_stage("nope", 1)


def test_seed_env_and_describe() -> None:
    """By default two invoices (new and legacy spelling) and a batch are seeded; env() points the poller here."""
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0)).start() as seeded:
        invoices = seeded.amili_collection.invoices()
        assert [(i["scenario"], i["legacy"], i["status"]) for i in invoices] == [
            ("paid", False, "OPEN"), ("paid", True, "Open"),
        ]  # fmt: skip
        assert [b["status"] for b in seeded.amili_collection.batches()] == ["QUEUED"]
        env = seeded.amili_collection.env(seeded.url)
        assert env == {
            "POLLER_AMILI_COLLECTION__BASE_URL": seeded.url,
            "POLLER_AMILI_COLLECTION__AUTH_URL": seeded.url,
            "POLLER_AMILI_COLLECTION__CLIENT_ID": "sim-collection-client",
            "POLLER_AMILI_COLLECTION__CLIENT_SECRET": "sim-collection-secret",
            "POLLER_AMILI_COLLECTION__ORG_ID": ORG,
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
            timeout=TIMEOUT,
        )
        assert token.status_code == 200


def test_options_override_credentials_and_org() -> None:
    """Client id, secret and org id come from options."""
    options = {
        "amili_collection_seed": 0,
        "amili_collection_client_id": "cid",
        "amili_collection_client_secret": "csecret",
        "amili_collection_org_id": OTHER_ORG,
    }
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, options=options)).start() as custom:
        invoice_id = custom.amili_collection.create_invoice()
        token = requests.post(
            f"{custom.url}/token",
            data={"grant_type": "client_credentials", "client_id": "cid", "client_secret": "csecret"},
            timeout=TIMEOUT,
        ).json()["access_token"]
        response = get_invoice(custom, invoice_id, bearer(token), org=OTHER_ORG)
        assert response.status_code == 200 and response.json()["data"]["organization"]["id"] == OTHER_ORG
        assert get_invoice(custom, invoice_id, bearer(token), org=ORG).status_code == 403


def test_stats_label_token_calls_apart(sim: Simulator, auth: dict[str, str]) -> None:
    """API calls count under amili_collection; token calls under the shared "identity" label."""
    invoice_id = sim.amili_collection.create_invoice()
    get_invoice(sim, invoice_id, auth).close()
    requests_by_label = sim.stats()["requests"]
    assert requests_by_label["amili_collection"]["total"] == 1
    assert requests_by_label["identity"] == {"total": 1, "paths": {"POST /token": 1}}
