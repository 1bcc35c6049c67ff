"""The provider simulator over real loopback HTTP: Billit API, faults, admin API, keep-alive."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator import FAULT_KINDS, SimClock, Simulator, SimulatorConfig

AUTH = {"ApiKey": "sim-billit-key", "PartyID": "1234"}
BILLIT_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMEOUT = 5


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A frozen-clock simulator with no orders, on a free port."""
    simulator = Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0)).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def get_order(
    sim: Simulator, order_id: int | str, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.get(
        f"{sim.url}/v1/orders/{order_id}", headers=AUTH if headers is None else headers, timeout=TIMEOUT
    )


def order_at_next_stage(sim: Simulator, order_id: int) -> dict[str, Any]:
    sim.clock.advance(sim.config.stage_seconds)
    response = get_order(sim, order_id)
    assert response.status_code == 200
    return response.json()


def assert_billit_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["errors"]
    assert len(body["errors"]) == 1
    assert body["errors"][0]["Code"] == code
    assert isinstance(body["errors"][0]["Description"], str) and body["errors"][0]["Description"]


# ---- clock ------------------------------------------------------------------


def test_clock_speed_zero_moves_only_by_advance() -> None:
    """A speed-0 clock stands still until advanced, and refuses to go backwards."""
    clock = SimClock(speed=0)
    assert clock.now() == 0
    assert clock.advance(12.5) == 12.5
    assert clock.now() == 12.5
    clock.set_speed(0)
    assert clock.now() == 12.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set_speed(-2)


# ---- auth and basic errors ----------------------------------------------------


def test_auth_ok(sim: Simulator) -> None:
    """Correct ApiKey and PartyID get the order object."""
    order_id = sim.billit.create_order()
    response = get_order(sim, order_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["OrderID"] == order_id


@pytest.mark.parametrize(
    "headers",
    [
        {"ApiKey": "wrong", "PartyID": "1234"},
        {"ApiKey": "sim-billit-key"},
        {"ApiKey": "sim-billit-key", "PartyID": "9999"},
        {"PartyID": "1234"},
        {"Authorization": "Bearer not-a-token", "PartyID": "1234"},
    ],
    ids=["wrong-apikey", "missing-partyid", "wrong-partyid", "missing-apikey", "bearer"],
)
def test_auth_rejected(sim: Simulator, headers: dict[str, str]) -> None:
    """Bad or missing credentials get 401 with Billit's errors body."""
    order_id = sim.billit.create_order()
    assert_billit_error(get_order(sim, order_id, headers), 401, "Unauthorized")


def test_unknown_order_404(sim: Simulator) -> None:
    """An unknown OrderID gets Billit's NotFound body."""
    response = get_order(sim, 424242)
    assert response.status_code == 404
    assert response.json() == {"errors": [{"Code": "NotFound", "Description": "Order not found"}]}


def test_non_integer_order_id_400(sim: Simulator) -> None:
    """A non-integer OrderID in the path gets 400 with Billit's errors body."""
    assert_billit_error(get_order(sim, "abc"), 400, "GenericError")


def test_unknown_path_404_json(sim: Simulator) -> None:
    """Paths nobody serves get a JSON 404."""
    response = requests.get(f"{sim.url}/v2/nothing", timeout=TIMEOUT)
    assert response.status_code == 404
    assert "error" in response.json()


# ---- order lives --------------------------------------------------------------


def test_paid_life(sim: Simulator) -> None:
    """A "paid" order walks ToSend, Pending, Delivered, Ontvangen, Betaald, Paid and then stops."""
    order_id = sim.billit.create_order()
    first = get_order(sim, order_id).json()
    assert list(first)[:16] == [
        "OrderID", "OrderNumber", "OrderType", "OrderDirection", "OrderStatus", "OrderDate", "ExpiryDate",
        "Currency", "TotalExcl", "TotalVAT", "TotalIncl", "Paid", "PaidDate", "IsSent", "LastModified",
        "Created",
    ]
    assert first["OrderType"] == "Invoice" and first["OrderDirection"] == "Income"
    assert first["Currency"] == "EUR"
    assert first["TotalIncl"] == pytest.approx(first["TotalExcl"] + first["TotalVAT"])
    assert set(first["CounterParty"]) == {"PartyID", "DisplayName", "VATNumber"}
    assert first["OrderStatus"] == "ToSend"
    assert first["IsSent"] is False and first["Paid"] is False and first["PaidDate"] is None
    assert "CurrentDocumentDeliveryDetails" not in first
    assert first["Messages"] == []

    pending = order_at_next_stage(sim, order_id)
    assert pending["OrderStatus"] == "ToPay" and pending["IsSent"] is True
    assert pending["CurrentDocumentDeliveryDetails"] == {
        "IsDocumentDelivered": False,
        "DocumentDeliveryStatus": "Pending",
    }
    assert pending["Messages"] == []

    delivered = order_at_next_stage(sim, order_id)
    details = delivered["CurrentDocumentDeliveryDetails"]
    assert list(details) == ["DocumentDeliveryDate", "IsDocumentDelivered", "DocumentDeliveryStatus"]
    assert BILLIT_TS.match(details["DocumentDeliveryDate"])
    assert details["IsDocumentDelivered"] is True and details["DocumentDeliveryStatus"] == "Delivered"
    assert delivered["OrderStatus"] == "ToPay"
    [outgoing] = delivered["Messages"]
    assert list(outgoing) == [
        "FileID", "CreationDate", "TransportType", "Success", "Trials", "Destination", "MessageDirection",
    ]
    assert UUID.match(outgoing["FileID"]) and BILLIT_TS.match(outgoing["CreationDate"])
    assert outgoing["TransportType"] == "Peppol" and outgoing["Success"] is True
    assert outgoing["Trials"] == 1 and outgoing["Destination"] == "0208:0446725877"
    assert outgoing["MessageDirection"] == "Outgoing"

    received = order_at_next_stage(sim, order_id)
    details = received["CurrentDocumentDeliveryDetails"]
    assert list(details) == [
        "DocumentDeliveryDate", "DocumentDeliveryInfo", "IsDocumentDelivered", "DocumentDeliveryStatus",
    ]
    assert details["DocumentDeliveryInfo"] == "Ontvangen"
    delivered_details = delivered["CurrentDocumentDeliveryDetails"]
    assert details["DocumentDeliveryDate"] == delivered_details["DocumentDeliveryDate"]
    assert received["Messages"][0] == outgoing
    ab = received["Messages"][1]
    assert ab["Description"] == "AB: The document has been successfully received."
    assert ab["Trials"] == 0 and ab["MessageDirection"] == "Incoming" and ab["FileID"] != outgoing["FileID"]
    assert received["OrderStatus"] == "ToPay"

    imr_paid = order_at_next_stage(sim, order_id)
    assert imr_paid["CurrentDocumentDeliveryDetails"]["DocumentDeliveryInfo"] == "Betaald"
    assert [m.get("Description") for m in imr_paid["Messages"]] == [
        None,
        "AB: The document has been successfully received.",
        "PD: The document has been paid.",
    ]
    assert imr_paid["Messages"][2]["MessageDirection"] == "Incoming"
    # The IMR does not mark the order paid in Billit; the seller does that later.
    assert imr_paid["OrderStatus"] == "ToPay" and imr_paid["Paid"] is False and imr_paid["PaidDate"] is None

    paid = order_at_next_stage(sim, order_id)
    assert paid["OrderStatus"] == "Paid" and paid["Paid"] is True
    assert BILLIT_TS.match(paid["PaidDate"])
    assert paid["LastModified"] > imr_paid["LastModified"] > received["LastModified"] > first["LastModified"]

    sim.clock.advance(sim.config.stage_seconds * 10)
    assert get_order(sim, order_id).json() == paid
    assert sim.billit.orders() == [
        {"id": order_id, "scenario": "paid", "stage": 5, "final_stage": 5, "OrderStatus": "Paid"}
    ]


def test_refused_life(sim: Simulator) -> None:
    """A "refused" order walks ToSend, Pending, Error (InvalidInvoice), Credited."""
    order_id = sim.billit.create_order(scenario="refused")
    assert get_order(sim, order_id).json()["OrderStatus"] == "ToSend"
    pending = order_at_next_stage(sim, order_id)
    assert pending["CurrentDocumentDeliveryDetails"]["DocumentDeliveryStatus"] == "Pending"

    refused = order_at_next_stage(sim, order_id)
    details = refused["CurrentDocumentDeliveryDetails"]
    assert list(details) == [
        "DocumentRefusedDate", "DocumentRefusedReasonTC", "DocumentRefusedInfo", "IsDocumentDelivered",
        "DocumentDeliveryStatus",
    ]
    assert BILLIT_TS.match(details["DocumentRefusedDate"])
    assert details["DocumentRefusedReasonTC"] == "InvalidInvoice"
    assert details["DocumentRefusedInfo"] == (
        "Inconsistency between VAT number and tax code of the recipient of the invoice (acquirer)"
    )
    assert details["IsDocumentDelivered"] is False and details["DocumentDeliveryStatus"] == "Error"

    credited = order_at_next_stage(sim, order_id)
    assert credited["OrderStatus"] == "Credited"
    assert credited["CurrentDocumentDeliveryDetails"] == details
    sim.clock.advance(100)
    assert get_order(sim, order_id).json() == credited


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator) -> None:
    """Polling twice within one stage returns exactly the same bytes."""
    order_id = sim.billit.create_order()
    sim.clock.advance(sim.config.stage_seconds * 3)
    first = get_order(sim, order_id).content
    sim.clock.advance(sim.config.stage_seconds / 2)
    assert get_order(sim, order_id).content == first


def test_create_order_ids_and_set_stage(sim: Simulator) -> None:
    """Auto ids start at 1001, duplicates and unknown scenarios are refused, set_stage jumps."""
    assert sim.billit.create_order() == 1001
    assert sim.billit.create_order(1002, "refused") == 1002
    assert sim.billit.create_order() == 1003
    with pytest.raises(ValueError, match="already exists"):
        sim.billit.create_order(1001)
    with pytest.raises(ValueError, match="scenario"):
        sim.billit.create_order(scenario="lost")
    sim.billit.set_stage(1001, 5)
    assert get_order(sim, 1001).json()["OrderStatus"] == "Paid"
    with pytest.raises(ValueError):
        sim.billit.set_stage(1002, 4)


def test_seeded_orders_and_describe() -> None:
    """Seeded orders exist from construction and describe() shows the env lines to export."""
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=3)).start() as seeded:
        assert [o["id"] for o in seeded.billit.orders()] == [1001, 1002, 1003]
        text = seeded.describe()
        assert f"export POLLER_BILLIT__BASE_URL={seeded.url}" in text
        assert "export POLLER_BILLIT__API_KEY=sim-billit-key" in text
        assert "export POLLER_BILLIT__PARTY_ID=1234" in text
        assert "1003" in text
        assert requests.get(f"{seeded.url}/_sim/health", timeout=TIMEOUT).json()["status"] == "ok"


# ---- faults -------------------------------------------------------------------


def test_fault_500_is_an_html_page(sim: Simulator) -> None:
    """A "500" fault answers 500 with a small HTML error page."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500")
    response = get_order(sim, order_id)
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text


def test_fault_503(sim: Simulator) -> None:
    """A "503" fault answers 503."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "503")
    assert get_order(sim, order_id).status_code == 503


@pytest.mark.parametrize(("retry_after", "expected"), [(None, "1"), (7, "7")])
def test_fault_429_has_retry_after(sim: Simulator, retry_after: int | None, expected: str) -> None:
    """A "429" fault carries Retry-After in seconds (default 1)."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "429", retry_after=retry_after)
    response = get_order(sim, order_id)
    assert_billit_error(response, 429, "TooManyRequests")
    assert response.headers["Retry-After"] == expected


def test_fault_slow_trips_client_timeout(sim: Simulator) -> None:
    """A "slow" fault delays the answer past a short client timeout; without it the answer is normal."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "slow", delay=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sim.url}/v1/orders/{order_id}", headers=AUTH, timeout=0.2)
    sim.faults.clear("billit")
    response = requests.get(f"{sim.url}/v1/orders/{order_id}", headers=AUTH, timeout=0.2)
    assert response.status_code == 200 and response.json()["OrderID"] == order_id


def test_fault_slow_then_answers_normally(sim: Simulator) -> None:
    """A "slow" fault still ends in the normal answer for a patient client."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "slow", delay=0.05, count=1)
    response = get_order(sim, order_id)
    assert response.status_code == 200 and response.json()["OrderID"] == order_id


def test_fault_malformed_is_invalid_json(sim: Simulator) -> None:
    """A "malformed" fault answers 200 application/json with a body that does not parse."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "malformed")
    response = get_order(sim, order_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def test_fault_html_is_200_text_html(sim: Simulator) -> None:
    """An "html" fault answers 200 with an HTML page instead of JSON."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "html")
    response = get_order(sim, order_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.lstrip().startswith("<!DOCTYPE html>")


def test_fault_404_and_401_use_billit_bodies(sim: Simulator) -> None:
    """"404" and "401" faults answer with Billit's error bodies even for a valid order."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "404", count=1)
    sim.faults.add("billit", "401", count=1)
    assert_billit_error(get_order(sim, order_id), 404, "NotFound")
    assert_billit_error(get_order(sim, order_id), 401, "Unauthorized")
    assert get_order(sim, order_id).status_code == 200


def test_faults_apply_after_auth(sim: Simulator) -> None:
    """A request with bad credentials gets 401 and does not consume a fault."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500", count=1)
    assert get_order(sim, order_id, {"ApiKey": "nope", "PartyID": "1234"}).status_code == 401
    assert get_order(sim, order_id).status_code == 500


def test_count_limited_fault_expires(sim: Simulator) -> None:
    """A fault with count=2 hits exactly two requests, then disappears."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "503", count=2)
    assert [get_order(sim, order_id).status_code for _ in range(3)] == [503, 503, 200]
    assert sim.faults.active() == []


def test_unlimited_fault_lasts_until_cleared(sim: Simulator) -> None:
    """A fault without count keeps firing until cleared."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500")
    assert [get_order(sim, order_id).status_code for _ in range(3)] == [500, 500, 500]
    assert sim.faults.clear() == 1
    assert get_order(sim, order_id).status_code == 200


def test_ref_scoped_fault_hits_only_that_order(sim: Simulator) -> None:
    """A fault scoped to one OrderID leaves other orders alone."""
    first = sim.billit.create_order()
    second = sim.billit.create_order()
    sim.faults.add("billit", "500", ref=str(second))
    assert get_order(sim, first).status_code == 200
    assert get_order(sim, second).status_code == 500
    assert get_order(sim, first).status_code == 200


def test_fault_for_other_provider_does_not_hit_billit(sim: Simulator) -> None:
    """Faults armed for another provider name never touch Billit requests."""
    order_id = sim.billit.create_order()
    sim.faults.add("amili_se", "500")
    assert get_order(sim, order_id).status_code == 200


def test_unknown_fault_kind_names_allowed_kinds(sim: Simulator) -> None:
    """Adding an unknown fault kind raises ValueError listing every allowed kind."""
    with pytest.raises(ValueError) as excinfo:
        sim.faults.add("billit", "teapot")
    for kind in FAULT_KINDS:
        assert kind in str(excinfo.value)


# ---- admin API ----------------------------------------------------------------


def test_admin_create_order_and_advance_clock(sim: Simulator) -> None:
    """Orders created and clock advanced over the admin API change what Billit answers."""
    created = requests.post(f"{sim.url}/_sim/billit/orders", json={"OrderID": 77, "scenario": "refused"},
                            timeout=TIMEOUT)
    assert created.status_code == 201 and created.json() == {"OrderID": 77}
    auto = requests.post(f"{sim.url}/_sim/billit/orders", json={}, timeout=TIMEOUT)
    assert auto.json() == {"OrderID": 1001}

    clock = requests.post(f"{sim.url}/_sim/clock", json={"advance": 20}, timeout=TIMEOUT)
    assert clock.status_code == 200 and clock.json()["now"] == 20
    assert get_order(sim, 77).json()["CurrentDocumentDeliveryDetails"]["DocumentDeliveryStatus"] == "Error"

    listed = requests.get(f"{sim.url}/_sim/billit/orders", timeout=TIMEOUT).json()["orders"]
    assert [(o["id"], o["scenario"], o["stage"]) for o in listed] == [(77, "refused", 2), (1001, "paid", 2)]

    staged = requests.post(f"{sim.url}/_sim/billit/orders/1001/stage", json={"stage": 5}, timeout=TIMEOUT)
    assert staged.json() == {"OrderID": 1001, "stage": 5}
    assert get_order(sim, 1001).json()["OrderStatus"] == "Paid"

    speed = requests.post(f"{sim.url}/_sim/clock", json={"speed": 0}, timeout=TIMEOUT)
    assert speed.json()["speed"] == 0


def test_admin_faults_add_list_and_clear(sim: Simulator) -> None:
    """Faults can be armed, listed and cleared over the admin API."""
    order_id = sim.billit.create_order()
    added = requests.post(f"{sim.url}/_sim/faults",
                          json={"provider": "billit", "kind": "429", "retry_after": 3, "ref": order_id},
                          timeout=TIMEOUT)
    assert added.status_code == 201
    assert added.json()["kind"] == "429" and added.json()["ref"] == str(order_id)
    assert len(requests.get(f"{sim.url}/_sim/faults", timeout=TIMEOUT).json()["faults"]) == 1
    assert get_order(sim, order_id).headers["Retry-After"] == "3"

    cleared = requests.delete(f"{sim.url}/_sim/faults", params={"provider": "billit"}, timeout=TIMEOUT)
    assert cleared.json() == {"cleared": 1}
    assert get_order(sim, order_id).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/_sim/faults", {"provider": "billit", "kind": "teapot"}),
        ("POST", "/_sim/faults", {"provider": "nobody", "kind": "500"}),
        ("POST", "/_sim/faults", {"provider": "billit", "kind": "500", "count": 0}),
        ("POST", "/_sim/faults", {"kind": "500"}),
        ("POST", "/_sim/faults", {"provider": "billit", "kind": "500", "colour": "red"}),
        ("POST", "/_sim/clock", {"advance": -5}),
        ("POST", "/_sim/clock", {"advance": "soon"}),
        ("POST", "/_sim/clock", {}),
        ("POST", "/_sim/billit/orders", {"scenario": "lost"}),
        ("POST", "/_sim/billit/orders", {"OrderID": "x"}),
        ("POST", "/_sim/billit/orders", [1, 2]),
    ],
)
def test_admin_bad_input_is_400(sim: Simulator, method: str, path: str, payload: Any) -> None:
    """Invalid admin requests answer 400 with an error message."""
    response = requests.request(method, f"{sim.url}{path}", json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]


def test_admin_invalid_json_and_duplicate_order_400(sim: Simulator) -> None:
    """A body that is not JSON, or a duplicate OrderID, answers 400."""
    bad = requests.post(f"{sim.url}/_sim/clock", data=b"{nope", timeout=TIMEOUT)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    sim.billit.create_order(5)
    dup = requests.post(f"{sim.url}/_sim/billit/orders", json={"OrderID": 5}, timeout=TIMEOUT)
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]


def test_admin_stats_counts_requests(sim: Simulator) -> None:
    """/_sim/stats counts requests per provider and path."""
    order_id = sim.billit.create_order()
    get_order(sim, order_id)
    get_order(sim, order_id)
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=TIMEOUT).json()
    assert stats["requests"]["billit"] == {"total": 2, "paths": {f"GET /v1/orders/{order_id}": 2}}
    assert stats["connections"] >= 3


# ---- transport ----------------------------------------------------------------


def test_keep_alive_reuses_one_connection(sim: Simulator) -> None:
    """Two GETs on one requests.Session travel over a single TCP connection."""
    order_id = sim.billit.create_order()
    with requests.Session() as session:
        for _ in range(2):
            response = session.get(f"{sim.url}/v1/orders/{order_id}", headers=AUTH, timeout=TIMEOUT)
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(len(response.content))
    assert sim.stats()["connections"] == 1
    assert sim.stats()["requests"]["billit"]["total"] == 2
