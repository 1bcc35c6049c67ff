"""Amili Norway's organisation invoice list, GET /orgs/{orgId}/invoices: paging, bodies and filters."""

from __future__ import annotations

from simulator import Simulator
from tests.sim import amili_no, common

sim = common.sim_fixture(options=common.NO_AMILI_NO_SEED)
auth = common.token_fixture(common.COLLECTION_CLIENT)


def test_paging_through_60_gives_25_25_10_each_once(sim: Simulator, auth: dict[str, str]) -> None:
    """PageSize 25 over 60 invoices: three pages, every invoice once, in (createdAt, id) order."""
    created = []
    for index in range(60):
        # Some invoices share a createdAt second and some do not, so both parts of the order count.
        if index % 7 == 6:
            sim.clock.advance(1)
        created.append(sim.amili_collection.create_invoice())
    pages = amili_no.all_pages(sim, auth, PageSize=25)
    assert [len(page) for page in pages] == [25, 25, 10]
    listed = [invoice["id"] for page in pages for invoice in page]
    assert len(set(listed)) == 60 and set(listed) == set(created)
    keys = [(invoice["createdAt"], invoice["id"]) for page in pages for invoice in page]
    assert keys == sorted(keys)
    assert len({created_at for created_at, _ in keys}) > 1
    # Without PageSize a page holds 25.
    first = amili_no.list_page(sim, auth)
    assert len(first["data"]) == 25 and first["summary"]["nextPageToken"] is not None


def test_one_page_and_empty_list_have_null_token(sim: Simulator, auth: dict[str, str]) -> None:
    """nextPageToken is null when everything fits, including when nothing matches."""
    empty = amili_no.list_page(sim, auth)
    assert empty["data"] == [] and empty["summary"]["nextPageToken"] is None
    created = [sim.amili_collection.create_invoice() for _ in range(3)]
    body = amili_no.list_page(sim, auth, PageSize=3)
    assert sorted(i["id"] for i in body["data"]) == sorted(created)
    assert body["summary"]["nextPageToken"] is None


def test_page_size_is_clamped_at_100(sim: Simulator, auth: dict[str, str]) -> None:
    """PageSize above 100 gives pages of 100; names bind case-insensitively."""
    for _ in range(120):
        sim.amili_collection.create_invoice()
    assert [len(page) for page in amili_no.all_pages(sim, auth, PageSize=500)] == [100, 20]
    assert [len(page) for page in amili_no.all_pages(sim, auth, pagesize="101")] == [100, 20]
    assert [len(page) for page in amili_no.all_pages(sim, auth, PageSize=100)] == [100, 20]
    assert len(amili_no.list_page(sim, auth, PageSize=1)["data"]) == 1


def test_invoice_created_while_paging_neither_repeats_nor_skips(sim: Simulator, auth: dict[str, str]) -> None:
    """The keyset cursor: a new invoice sorting before the cursor does not shift the next pages."""
    created = {sim.amili_collection.create_invoice() for _ in range(60)}
    first = amili_no.list_page(sim, auth, PageSize=25)
    # Same createdAt (the clock is frozen) and "." sorts before every hex digit: this invoice lands
    # first in the order, ahead of all that page 1 sent. An offset cursor would repeat one on page 2.
    early = sim.amili_collection.create_invoice("0.early")
    assert amili_no.ids(sim, auth)[0] == early
    second = amili_no.list_page(sim, auth, PageSize=25, PageToken=first["summary"]["nextPageToken"])
    # And one created later than everything goes at the end, so the client still reaches it.
    sim.clock.advance(1)
    late = sim.amili_collection.create_invoice()
    third = amili_no.list_page(sim, auth, PageSize=25, PageToken=second["summary"]["nextPageToken"])
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
    everything = amili_no.ids(sim, auth)
    first = amili_no.list_page(sim, auth, PageSize=3)
    rest = amili_no.list_page(sim, auth, PageSize=100, PageToken=first["summary"]["nextPageToken"])
    assert [i["id"] for i in first["data"] + rest["data"]] == everything


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
        listed = {i["id"]: i for page in amili_no.all_pages(sim, auth, PageSize=2) for i in page}
        assert set(listed) == set(made)
        for invoice_id in made:
            assert list(listed[invoice_id]) == amili_no.INVOICE_FIELDS
            assert listed[invoice_id] == amili_no.single(sim, invoice_id, auth)
        amili_no.next_stage(sim)
    # By now the lives have moved: the comparison covered closed and paused bodies, not only fresh ones.
    assert {listed[i]["status"] for i in made} == {"CLOSED", "Closed", "PAUSED", "Withdrawn"}


def test_status_filter_either_spelling_and_closing_leaves_open(sim: Simulator, auth: dict[str, str]) -> None:
    """Status matches OPEN and Open alike; an invoice that closes drops out of Status=OPEN."""
    amili = sim.amili_collection
    closing = amili.create_invoice()
    amili_no.next_stage(sim, 3)
    legacy = amili.create_invoice(legacy=True)
    paused = amili.create_invoice(scenario="paused")
    withdrawn = amili.create_invoice(scenario="withdrawn")
    everyone = [closing, legacy, paused, withdrawn]
    assert sorted(amili_no.ids(sim, auth, Status="OPEN")) == sorted(everyone)
    assert sorted(amili_no.ids(sim, auth, Status="Open")) == sorted(everyone)
    assert amili_no.ids(sim, auth, Status="CLOSED") == []

    amili_no.next_stage(sim)  # closing reaches CLOSED, withdrawn WITHDRAWN; the others stay open
    assert amili_no.single(sim, closing, auth)["status"] == "CLOSED"
    assert sorted(amili_no.ids(sim, auth, Status="OPEN")) == sorted([legacy, paused])
    assert sorted(amili_no.ids(sim, auth, status="open")) == sorted([legacy, paused])
    assert amili_no.ids(sim, auth, Status="Closed") == [closing]
    assert amili_no.ids(sim, auth, Status="WITHDRAWN") == [withdrawn]
    assert sorted(amili_no.ids(sim, auth, Status="CLOSED,WITHDRAWN")) == sorted([closing, withdrawn])
    assert sorted(amili_no.ids(sim, auth, Status=["CLOSED", "WITHDRAWN"])) == sorted([closing, withdrawn])
    assert sorted(amili_no.ids(sim, auth)) == sorted(everyone)


def test_type_invoice_number_source_and_customer_filters(sim: Simulator, auth: dict[str, str]) -> None:
    """Type is case-insensitive; InvoiceNumber, UniqueSourceInvoiceId and CustomerNumber match exactly."""
    amili = sim.amili_collection
    early = amili.create_invoice()
    amili_no.next_stage(sim)
    fresh = amili.create_invoice()
    other = amili.create_invoice(legacy=True)
    # early is at PAYMENT_REMINDER now; the two fresh ones at NOTICE.
    assert amili_no.ids(sim, auth, Type="PAYMENT_REMINDER") == [early]
    assert amili_no.ids(sim, auth, Type="payment_reminder") == [early]
    assert sorted(amili_no.ids(sim, auth, Type="NOTICE")) == sorted([fresh, other])
    assert amili_no.ids(sim, auth, Type="COLLECTION_NOTICE") == []

    body = amili_no.single(sim, fresh, auth)
    assert amili_no.ids(sim, auth, InvoiceNumber=body["invoiceNumber"]) == [fresh]
    assert amili_no.ids(sim, auth, InvoiceNumber=body["invoiceNumber"][:-1]) == []  # no prefix matching
    assert amili_no.ids(sim, auth, UniqueSourceInvoiceId=body["uniqueSourceInvoiceId"]) == [fresh]
    assert amili_no.ids(sim, auth, UniqueSourceInvoiceId=body["uniqueSourceInvoiceId"].upper()) == []
    customer = amili_no.single(sim, other, auth)["debtors"][0]["customerNumber"]
    assert amili_no.ids(sim, auth, CustomerNumber=customer) == [other]
    assert amili_no.ids(sim, auth, CustomerNumber="000000") == []
    # Filters combine.
    assert amili_no.ids(sim, auth, Type="NOTICE", InvoiceNumber=body["invoiceNumber"]) == [fresh]
    assert amili_no.ids(sim, auth, Type="PAYMENT_REMINDER", InvoiceNumber=body["invoiceNumber"]) == []


def test_from_to_bound_created_at_inclusively(sim: Simulator, auth: dict[str, str]) -> None:
    """From/To take dates or date-times and include both ends; a date To covers the whole day."""
    amili = sim.amili_collection
    first = amili.create_invoice()
    sim.clock.advance(30)
    second = amili.create_invoice()
    sim.clock.advance(24 * 3600)
    third = amili.create_invoice()
    stamps = [amili_no.single(sim, i, auth)["createdAt"] for i in (first, second, third)]
    assert stamps == ["2025-05-07T14:00:00Z", "2025-05-07T14:00:30Z", "2025-05-08T14:00:30Z"]

    assert amili_no.ids(sim, auth, From=stamps[1]) == [second, third]
    assert amili_no.ids(sim, auth, To=stamps[1]) == [first, second]
    assert amili_no.ids(sim, auth, From=stamps[1], To=stamps[1]) == [second]
    assert amili_no.ids(sim, auth, From="2025-05-07T14:00:01", To="2025-05-07T14:00:29Z") == []
    assert amili_no.ids(sim, auth, To="2025-05-07") == [first, second]
    assert amili_no.ids(sim, auth, From="2025-05-08") == [third]
    assert amili_no.ids(sim, auth, From="2025-05-07", To="2025-05-08") == [first, second, third]
    assert amili_no.ids(sim, auth, To="2025-05-06") == []
    # Offsets convert to UTC: 16:00:30+02:00 is 14:00:30Z.
    assert amili_no.ids(sim, auth, From="2025-05-07T16:00:30+02:00", To="2025-05-07T16:00:30+02:00") == [second]
    assert amili_no.ids(sim, auth, From=stamps[2], To=stamps[0]) == []
