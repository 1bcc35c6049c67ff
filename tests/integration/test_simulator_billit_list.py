"""The fake Billit's order list ``GET /v1/orders`` over real loopback HTTP: paging, $filter, $orderby, faults."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import requests

from simulator import Simulator
from simulator.billit_order import billit_timestamp
from tests.sim import billit, common

TIMEOUT = 10
LIST = "GET /v1/orders"


sim = common.sim_fixture()
# Stages so short that every order created at one frozen instant has the same LastModified: the
# per-order sub-second jitter of a stamp is at most stage_seconds / 2, here under a millisecond.
tie_sim = common.sim_fixture(stage_seconds=0.0002)


def list_orders(
    sim: Simulator, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.get(
        f"{sim.url}/v1/orders", params=params, headers=billit.AUTH if headers is None else headers, timeout=TIMEOUT
    )


def all_pages(sim: Simulator, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Follow NextPageLink from the first page to the last; return every page body."""
    response = list_orders(sim, params)
    pages = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body)
        link = body["NextPageLink"]
        if link is None:
            return pages
        response = requests.get(link, headers=billit.AUTH, timeout=TIMEOUT)


def ids(body: dict[str, Any]) -> list[int]:
    return [item["OrderID"] for item in body["Items"]]


def list_requests(sim: Simulator) -> int:
    return sum(1 for _, label, key in sim.request_log if label == "billit" and key == LIST)


def stamp(body: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(body["LastModified"])


# ---- paging ---------------------------------------------------------------------


def test_pages_of_120_cover_every_order_once(sim: Simulator) -> None:
    """250 orders come as 120/120/10, each once, in OrderID order, linked by absolute NextPageLinks."""
    created = [sim.billit.create_order(scenario="paid" if n % 3 else "refused") for n in range(250)]
    sim.clock.advance(25)  # orders at different stages, so bodies differ
    pages = all_pages(sim)
    assert [len(page["Items"]) for page in pages] == [120, 120, 10]
    assert [order_id for page in pages for order_id in ids(page)] == sorted(created)
    for page in pages[:-1]:
        assert page["NextPageLink"].startswith(f"{sim.url}/v1/orders?")
    assert "$skip=120" in pages[0]["NextPageLink"] and "$skip=240" in pages[1]["NextPageLink"]
    assert list(pages[-1]) == ["Items", "NextPageLink"] and pages[-1]["NextPageLink"] is None
    # Each item is exactly what the item route answers at this instant.
    for item in pages[0]["Items"][:5] + pages[-1]["Items"]:
        assert item == sim.billit.order_body(item["OrderID"])
    assert list_requests(sim) == 3


def test_skip_and_top_pick_a_window(sim: Simulator) -> None:
    """``$skip`` starts later; past the end the page is empty and last."""
    for _ in range(30):
        sim.billit.create_order()
    body = list_orders(sim, {"$skip": "10", "$top": "5"}).json()
    assert ids(body) == list(range(1011, 1016))
    assert "$top=5" in body["NextPageLink"] and "$skip=15" in body["NextPageLink"]
    assert list_orders(sim, {"$skip": "500"}).json() == {"Items": [], "NextPageLink": None}
    assert list_orders(sim, {"$top": "0"}).json() == {"Items": [], "NextPageLink": None}


def test_top_lowers_the_page_size_but_cannot_raise_it(sim: Simulator) -> None:
    """``$top=50`` gives pages of 50 (kept in the link); ``$top=500`` still gives 120."""
    created = [sim.billit.create_order() for _ in range(130)]
    pages = all_pages(sim, {"$top": "50"})
    assert [len(page["Items"]) for page in pages] == [50, 50, 30]
    assert [order_id for page in pages for order_id in ids(page)] == created
    pages = all_pages(sim, {"$top": "500"})
    assert [len(page["Items"]) for page in pages] == [120, 10]


def test_next_page_link_uses_the_request_host(sim: Simulator) -> None:
    """The link names the host the client used, so it works however the simulator was reached."""
    for _ in range(121):
        sim.billit.create_order()
    response = list_orders(sim, headers={**billit.AUTH, "Host": f"localhost:{sim.port}"})
    assert response.json()["NextPageLink"].startswith(f"http://localhost:{sim.port}/v1/orders?")


# ---- $filter and $orderby ----------------------------------------------------------


def test_last_modified_mark_returns_later_changes_in_order(sim: Simulator) -> None:
    """``LastModified ge DateTime'…'``, ``$orderby=LastModified asc``: only changes at/after the mark, oldest first."""
    old = [sim.billit.create_order() for _ in range(10)]
    sim.clock.advance(1000)  # every old order is final long before the mark
    mark = billit_timestamp(sim.clock.wall())
    new = [sim.billit.create_order(scenario="refused") for _ in range(5)]
    sim.billit.set_stage(old[3], 2)  # an old order modified after the mark
    params = {"$filter": f"LastModified ge DateTime'{mark}'", "$orderby": "LastModified asc"}
    (page,) = all_pages(sim, params)
    bodies = [sim.billit.order_body(order_id) for order_id in old + new]
    expected = sorted(
        (b for b in bodies if stamp(b) >= datetime.fromisoformat(mark)), key=lambda b: (stamp(b), b["OrderID"])
    )
    assert page["Items"] == expected
    assert set(ids(page)) == {*new, old[3]}
    # Millisecond stamps compare exactly: ge keeps the order at the mark, gt drops it.
    first = page["Items"][0]
    exact = {"$filter": f"LastModified ge DateTime'{first['LastModified']}'", "$orderby": "LastModified asc"}
    assert ids(list_orders(sim, exact).json()) == ids(page)
    exact["$filter"] = exact["$filter"].replace(" ge ", " gt ")
    assert ids(list_orders(sim, exact).json()) == ids(page)[1:]


def test_equal_last_modified_is_ordered_by_order_id(tie_sim: Simulator) -> None:
    """Ties on the sort key fall back to OrderID asc, in either direction, and $skip paging over ties is exact."""
    wanted = [2007, 2003, 2010, 2001, 2005, 2009, 2002, 2008, 2004, 2006]  # not created in OrderID order
    for order_id in wanted:
        tie_sim.billit.create_order(order_id=order_id)
    assert len({tie_sim.billit.order_body(order_id)["LastModified"] for order_id in wanted}) == 1
    for direction in ("asc", "desc"):
        body = list_orders(tie_sim, {"$orderby": f"LastModified {direction}"}).json()
        assert ids(body) == sorted(wanted)
    pages = all_pages(tie_sim, {"$orderby": "LastModified asc", "$top": "3"})
    assert [order_id for page in pages for order_id in ids(page)] == sorted(wanted)
    assert ids(list_orders(tie_sim, {"$orderby": "LastModified asc, OrderID desc"}).json()) == sorted(wanted)[::-1]


def test_and_with_order_direction_and_documented_example(sim: Simulator) -> None:
    """``and`` joins comparisons (keywords in any case); Billit's own example URL works as written."""
    created = [sim.billit.create_order() for _ in range(3)]
    income = {"$filter": "LastModified ge DateTime'2022-01-01' AND OrderDirection Eq 'Income'"}
    assert ids(list_orders(sim, income).json()) == created
    cost = {"$filter": "LastModified ge DateTime'2022-01-01' and OrderDirection eq 'Cost'"}
    assert list_orders(sim, cost).json() == {"Items": [], "NextPageLink": None}
    example = "$filter=LastModified+ge+DateTime'2022-01-01'+and+OrderType+eq+'Invoice'&$orderby=LastModified+asc"
    response = requests.get(f"{sim.url}/v1/orders?{example}", headers=billit.AUTH, timeout=TIMEOUT)
    assert response.status_code == 200 and sorted(ids(response.json())) == created


@pytest.mark.parametrize(
    ("condition", "keep"),
    [
        ("Paid eq true", lambda b: b["Paid"] is True),
        ("IsSent eq false", lambda b: b["IsSent"] is False),
        ("TotalIncl gt 700.5", lambda b: b["TotalIncl"] > 700.5),
        ("CounterParty/PartyID le 501005", lambda b: b["CounterParty"]["PartyID"] <= 501005),
        ("OrderStatus ne 'ToPay'", lambda b: b["OrderStatus"] != "ToPay"),
        ("PaidDate eq null", lambda b: b["PaidDate"] is None),
        ("PaidDate ne null", lambda b: b["PaidDate"] is not None),
        ("CompanyID eq null", lambda b: True),  # filterable, but the fake never sets it
    ],
)
def test_filter_on_other_types(sim: Simulator, condition: str, keep: Any) -> None:
    """Booleans, numbers, nested properties, strings and null compare like Billit's typed fields."""
    created = [sim.billit.create_order() for _ in range(12)]
    for stage, order_id in enumerate(created[:6]):
        sim.billit.set_stage(order_id, stage)
    expected = [order_id for order_id in created if keep(sim.billit.order_body(order_id))]
    assert expected  # the fixture data has a match for every condition, so an empty answer is a bug
    assert ids(list_orders(sim, {"$filter": condition}).json()) == expected


@pytest.mark.parametrize(
    "condition",
    ["CounterParty/DisplayName eq 'x'", "Messages eq null", "OrderID eq 1001 and DocumentDeliveryStatus eq 'Error'"],
)
def test_non_filterable_property_is_generic_error(sim: Simulator, condition: str) -> None:
    """A property outside Billit's filterable list answers 400 GenericError naming it."""
    sim.billit.create_order()
    description = billit.assert_billit_error(list_orders(sim, {"$filter": condition}), 400, "GenericError")
    assert "not filterable" in description


@pytest.mark.parametrize(
    "params",
    [
        {"$filter": "LastModified ge"},
        {"$filter": "LastModified >= DateTime'2022-01-01'"},
        {"$filter": "LastModified ge DateTime'yesterday'"},
        {"$filter": "LastModified ge DateTime'2022-01-01T00:00:00Z'"},
        {"$filter": "LastModified ge '2022-01-01'"},
        {"$filter": "OrderID eq 1 or OrderID eq 2"},
        {"$filter": "(OrderID eq 1)"},
        {"$filter": "OrderID gt null"},
        {"$filter": "  "},
        {"$orderby": "LastModified sideways"},
        {"$orderby": "DisplayName"},
        {"$top": "-1"},
        {"$skip": "ten"},
    ],
)
def test_malformed_query_is_400(sim: Simulator, params: dict[str, str]) -> None:
    """Malformed options answer 400 GenericError with a description saying what is wrong."""
    sim.billit.create_order()
    description = billit.assert_billit_error(list_orders(sim, params), 400, "GenericError")
    assert any(name in description for name in ("$filter", "$orderby", "$top", "$skip"))


# ---- auth and faults ---------------------------------------------------------------


@pytest.mark.parametrize("headers", billit.BAD_CREDENTIALS.values(), ids=billit.BAD_CREDENTIALS.keys())
def test_auth_answers_like_the_item_route(sim: Simulator, headers: dict[str, str]) -> None:
    """Bad or missing credentials get the item route's 401 body, before any query checking."""
    order_id = sim.billit.create_order()
    item = requests.get(f"{sim.url}/v1/orders/{order_id}", headers=headers, timeout=TIMEOUT)
    listed = list_orders(sim, {"$filter": "Nope eq 1"}, headers)
    assert billit.assert_billit_error(listed, 401, "Unauthorized")
    assert (listed.status_code, listed.json()) == (item.status_code, item.json())


def test_unscoped_fault_hits_list_requests(sim: Simulator) -> None:
    """A billit fault with no ref fails list requests too, once per use."""
    sim.billit.create_order()
    sim.faults.add("billit", "503", count=1, retry_after=2)
    response = list_orders(sim)
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert list_orders(sim).status_code == 200


def test_second_list_request_fails_then_retry_succeeds(sim: Simulator) -> None:
    """Arming ``ref: "list"`` after page 1 fails the next list request only; item requests are untouched."""
    for _ in range(130):
        sim.billit.create_order()
    first = list_orders(sim).json()
    sim.faults.add("billit", "503", count=1, ref="list")
    assert requests.get(f"{sim.url}/v1/orders/1001", headers=billit.AUTH, timeout=TIMEOUT).status_code == 200
    assert requests.get(first["NextPageLink"], headers=billit.AUTH, timeout=TIMEOUT).status_code == 503
    second = requests.get(first["NextPageLink"], headers=billit.AUTH, timeout=TIMEOUT)
    assert second.status_code == 200 and len(second.json()["Items"]) == 10
    assert list_requests(sim) == 3


def test_page_scoped_fault_fails_only_that_page(sim: Simulator) -> None:
    """``ref: "list:120"``, armed before paging starts, fails the page at $skip=120 and nothing else."""
    for _ in range(250):
        sim.billit.create_order()
    sim.faults.add("billit", "500", count=1, ref="list:120")
    first = list_orders(sim)
    assert first.status_code == 200 and len(first.json()["Items"]) == 120
    link = first.json()["NextPageLink"]
    failed = requests.get(link, headers=billit.AUTH, timeout=TIMEOUT)
    assert failed.status_code == 500 and failed.headers["Content-Type"].startswith("text/html")
    retried = requests.get(link, headers=billit.AUTH, timeout=TIMEOUT)
    assert retried.status_code == 200 and len(retried.json()["Items"]) == 120
    assert sim.faults.active("billit") == []


def test_item_scoped_fault_does_not_hit_the_list(sim: Simulator) -> None:
    """A fault aimed at one OrderID stays on the item route."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500", ref=str(order_id))
    assert list_orders(sim).status_code == 200
    assert requests.get(f"{sim.url}/v1/orders/{order_id}", headers=billit.AUTH, timeout=TIMEOUT).status_code == 500
