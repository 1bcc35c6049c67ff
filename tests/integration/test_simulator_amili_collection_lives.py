"""The fake Amili Debt.Collection API: invoice lives, their cases (GET /orgs/{org}/cases) and batches."""

from __future__ import annotations

from typing import Any

import pytest

from simulator import Simulator
from tests.sim import amili_no, common

sim = common.sim_fixture(token_ttl_seconds=amili_no.TTL, options=common.NO_AMILI_NO_SEED)
auth = common.token_fixture(common.COLLECTION_CLIENT)


def test_paid_life(sim: Simulator, auth: dict[str, str]) -> None:
    """A "paid" invoice: NOTICE, PAYMENT_REMINDER, COLLECTION_NOTICE, part payment, CLOSED."""
    invoice_id = sim.amili_collection.create_invoice()
    assert common.UUID.match(invoice_id)
    notice = amili_no.invoice_data(sim, invoice_id, auth)
    assert list(notice) == amili_no.INVOICE_FIELDS
    assert notice["id"] == invoice_id
    assert notice["organization"]["id"] == amili_no.ORG and list(notice["organization"]) == [
        "id",
        "organizationNumber",
        "name",
    ]
    assert (notice["status"], notice["type"]) == ("OPEN", "NOTICE")
    assert (notice["originalInvoiceAmount"], notice["currentAmount"], notice["paidAmount"]) == (1000, 1000, 0)
    assert notice["closedAt"] is None and notice["currency"] == "NOK"
    for field in ("createdAt", "invoiceDate", "dueDate"):
        assert common.ISO_Z.match(notice[field])
    assert notice["invoiceDate"] < notice["dueDate"] < notice["createdAt"]
    assert notice["claims"] == [
        {"type": "PRINCIPAL", "originalAmount": 1000, "currentAmount": 1000, "paidAmount": 0, "currency": "NOK"}
    ]
    [debtor] = notice["debtors"]
    assert list(debtor) == amili_no.DEBTOR_FIELDS and debtor["type"] == "Private"
    assert list(debtor["addresses"][0]) == ["street", "city", "zipCode", "countryCode"]
    assert debtor["emails"] == [{"value": "ola.nordmann@example.no"}]

    amili_no.next_stage(sim)
    reminder = amili_no.invoice_data(sim, invoice_id, auth)
    assert (reminder["status"], reminder["type"], reminder["currentAmount"]) == ("OPEN", "PAYMENT_REMINDER", 1070)
    assert [c["type"] for c in reminder["claims"]] == ["PRINCIPAL", "REMINDER_FEE"]
    assert reminder["claims"][1]["currentAmount"] == 70

    amili_no.next_stage(sim)
    collection = amili_no.invoice_data(sim, invoice_id, auth)
    assert (collection["type"], collection["currentAmount"], collection["paidAmount"]) == (
        "COLLECTION_NOTICE", 1140, 0,
    )  # fmt: skip
    assert len(collection["claims"]) == 3

    amili_no.next_stage(sim)
    partial = amili_no.invoice_data(sim, invoice_id, auth)
    assert (partial["status"], partial["currentAmount"], partial["paidAmount"]) == ("OPEN", 640, 500)
    assert sum(c["paidAmount"] for c in partial["claims"]) == 500
    assert partial["closedAt"] is None

    amili_no.next_stage(sim)
    paid = amili_no.invoice_data(sim, invoice_id, auth)
    assert (paid["status"], paid["currentAmount"], paid["paidAmount"]) == ("CLOSED", 0, 1140)
    assert common.ISO_Z.match(paid["closedAt"]) and paid["closedAt"] > paid["createdAt"]
    assert all(c["currentAmount"] == 0 and c["paidAmount"] == c["originalAmount"] for c in paid["claims"])
    assert paid["createdAt"] == notice["createdAt"]

    sim.clock.advance(sim.config.stage_seconds * 10)
    assert amili_no.invoice_data(sim, invoice_id, auth) == paid
    [info] = sim.amili_collection.invoices()
    assert (info["stage"], info["final_stage"], info["status"]) == (4, 4, "CLOSED")


def test_paused_life(sim: Simulator, auth: dict[str, str]) -> None:
    """A "paused" invoice goes OPEN/NOTICE, PAYMENT_REMINDER, then stays PAUSED and open."""
    invoice_id = sim.amili_collection.create_invoice(scenario="paused")
    assert amili_no.invoice_data(sim, invoice_id, auth)["type"] == "NOTICE"
    amili_no.next_stage(sim)
    assert amili_no.invoice_data(sim, invoice_id, auth)["type"] == "PAYMENT_REMINDER"
    amili_no.next_stage(sim)
    paused = amili_no.invoice_data(sim, invoice_id, auth)
    assert (paused["status"], paused["type"], paused["currentAmount"]) == ("PAUSED", "PAYMENT_REMINDER", 1070)
    assert paused["closedAt"] is None
    sim.clock.advance(100)
    assert amili_no.invoice_data(sim, invoice_id, auth) == paused


def test_withdrawn_life(sim: Simulator, auth: dict[str, str]) -> None:
    """A "withdrawn" invoice goes OPEN, then WITHDRAWN with closedAt set."""
    invoice_id = sim.amili_collection.create_invoice(scenario="withdrawn")
    assert amili_no.invoice_data(sim, invoice_id, auth)["status"] == "OPEN"
    amili_no.next_stage(sim)
    withdrawn = amili_no.invoice_data(sim, invoice_id, auth)
    assert withdrawn["status"] == "WITHDRAWN" and common.ISO_Z.match(withdrawn["closedAt"])


def test_legacy_spelling(sim: Simulator, auth: dict[str, str]) -> None:
    """legacy=True spells statuses like seed 001 ("Open", "Closed"); types are unchanged."""
    invoice_id = sim.amili_collection.create_invoice(legacy=True)
    first = amili_no.invoice_data(sim, invoice_id, auth)
    assert (first["status"], first["type"]) == ("Open", "NOTICE")
    sim.amili_collection.set_stage(invoice_id, 4)
    assert amili_no.invoice_data(sim, invoice_id, auth)["status"] == "Closed"
    paused = sim.amili_collection.create_invoice(scenario="paused", legacy=True)
    withdrawn = sim.amili_collection.create_invoice(scenario="withdrawn", legacy=True)
    sim.clock.advance(100)
    assert amili_no.invoice_data(sim, paused, auth)["status"] == "Paused"
    assert amili_no.invoice_data(sim, withdrawn, auth)["status"] == "Withdrawn"


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator, auth: dict[str, str]) -> None:
    """Polling twice within one stage returns exactly the same bytes, for invoices, cases and batches."""
    invoice_id = sim.amili_collection.create_invoice()
    batch_id = sim.amili_collection.create_batch(scenario="partial")
    sim.clock.advance(sim.config.stage_seconds * 2.2)
    paths = [
        f"/orgs/{amili_no.ORG}/invoices/{invoice_id}",
        f"/orgs/{amili_no.ORG}/cases",
        f"/orgs/{amili_no.ORG}/batches/{batch_id}",
    ]
    first = [amili_no.api_get(sim, path, auth).content for path in paths]
    sim.clock.advance(sim.config.stage_seconds * 0.5)
    assert [amili_no.api_get(sim, path, auth).content for path in paths] == first


def test_cases_follow_the_invoice_life(sim: Simulator, auth: dict[str, str]) -> None:
    """Each invoice is one case with the case fields and the same status, type and amounts."""
    invoice_id = sim.amili_collection.create_invoice()
    sim.clock.advance(sim.config.stage_seconds * 3)
    body = amili_no.list_cases(sim, auth)
    assert body["summary"] == {"status": "SUCCESS", "nextPageToken": None}
    [case] = body["data"]
    assert list(case) == amili_no.CASE_FIELDS
    invoice = amili_no.invoice_data(sim, invoice_id, auth)
    assert common.UUID.match(case["id"]) and case["id"] != invoice_id
    assert case["caseNumber"] == invoice["collectionCaseNumber"]
    assert case["organizationId"] == amili_no.ORG
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
    cases = {c["uniqueSourceInvoiceId"]: c for c in amili_no.list_cases(sim, auth)["data"]}
    by_invoice = {i: sim.amili_collection.case_body(i)["uniqueSourceInvoiceId"] for i in (paid, legacy, paused)}

    def ids(**params: Any) -> list[str]:
        return [c["uniqueSourceInvoiceId"] for c in amili_no.list_cases(sim, auth, **params)["data"]]

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
        body = amili_no.list_cases(sim, auth, **params)
        pages += 1
        seen.extend(c["id"] for c in body["data"])
        token = body["summary"]["nextPageToken"]
        if token is None:
            break
    assert pages == 3
    assert seen == [sim.amili_collection.case_body(i)["id"] for i in created]
    assert len(amili_no.list_cases(sim, auth)["data"]) == 5  # default page size 25


@pytest.mark.parametrize(
    "params",
    [{"PageSize": "0"}, {"PageSize": "101"}, {"PageSize": "ten"}, {"PageToken": "garbage!"},
     {"FromCreatedAt": "yesterday"}],
    ids=["size-0", "size-101", "size-text", "bad-token", "bad-date"],
)  # fmt: skip
def test_cases_bad_query_400(sim: Simulator, auth: dict[str, str], params: dict[str, str]) -> None:
    """Malformed paging or date parameters get 400 in Amili's error shape."""
    amili_no.assert_amili_error(amili_no.api_get(sim, f"/orgs/{amili_no.ORG}/cases", auth, params), 400, "BadRequest")


@pytest.mark.parametrize(
    ("scenario", "terminal", "succeeded", "failed"),
    [("success", "SUCCESS", 3, 0), ("partial", "PARTIAL", 2, 1), ("failed", "FAILED", 0, 3)],
)
def test_batch_life(
    sim: Simulator, auth: dict[str, str], scenario: str, terminal: str, succeeded: int, failed: int
) -> None:
    """A batch goes QUEUED, PROCESSING, then its terminal status with succeeded/failed entries."""
    batch_id = sim.amili_collection.create_batch(scenario=scenario)
    queued = amili_no.get_batch(sim, batch_id, auth)
    assert list(queued) == [
        "batchId", "type", "status", "createdAt", "finishedAt", "organizationId", "createdBy", "succeeded", "failed",
    ]  # fmt: skip
    assert (queued["batchId"], queued["type"], queued["status"]) == (batch_id, "INVOICE", "QUEUED")
    assert queued["finishedAt"] is None and queued["succeeded"] == [] and queued["failed"] == []
    assert (
        queued["organizationId"] == amili_no.ORG
        and common.UUID.match(queued["createdBy"])
        and common.ISO_Z.match(queued["createdAt"])
    )
    amili_no.next_stage(sim)
    processing = amili_no.get_batch(sim, batch_id, auth)
    assert processing["status"] == "PROCESSING" and processing["finishedAt"] is None
    amili_no.next_stage(sim)
    done = amili_no.get_batch(sim, batch_id, auth)
    assert (
        done["status"] == terminal and common.ISO_Z.match(done["finishedAt"]) and done["finishedAt"] > done["createdAt"]
    )
    assert len(done["succeeded"]) == succeeded and len(done["failed"]) == failed
    for entry in done["succeeded"]:
        assert list(entry) == ["invoiceId", "invoiceNumber", "caseId"] and common.UUID.match(entry["invoiceId"])
    for entry in done["failed"]:
        assert list(entry) == ["reference", "errors"]
        assert entry["errors"] and set(entry["errors"][0]) == {"code", "message"}
    sim.clock.advance(100)
    assert amili_no.get_batch(sim, batch_id, auth) == done
