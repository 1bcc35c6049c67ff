"""The provider simulator over real loopback HTTP: the clock, Billit's orders and their lives, keep-alive."""

from __future__ import annotations

import pytest
import requests

from simulator import SimClock, Simulator
from tests.sim import billit, common

sim = common.sim_fixture()


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


def test_auth_ok(sim: Simulator) -> None:
    """Correct ApiKey and PartyID get the order object."""
    order_id = sim.billit.create_order()
    response = billit.get_order(sim, order_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["OrderID"] == order_id


@pytest.mark.parametrize("headers", billit.BAD_CREDENTIALS.values(), ids=billit.BAD_CREDENTIALS.keys())
def test_auth_rejected(sim: Simulator, headers: dict[str, str]) -> None:
    """Bad or missing credentials get 401 with Billit's errors body."""
    order_id = sim.billit.create_order()
    billit.assert_billit_error(billit.get_order(sim, order_id, headers), 401, "Unauthorized")


def test_unknown_order_404(sim: Simulator) -> None:
    """An unknown OrderID gets Billit's NotFound body."""
    response = billit.get_order(sim, 424242)
    assert response.status_code == 404
    assert response.json() == {"errors": [{"Code": "NotFound", "Description": "Order not found"}]}


def test_non_integer_order_id_400(sim: Simulator) -> None:
    """A non-integer OrderID in the path gets 400 with Billit's errors body."""
    billit.assert_billit_error(billit.get_order(sim, "abc"), 400, "GenericError")


def test_unknown_path_404_json(sim: Simulator) -> None:
    """Paths nobody serves get a JSON 404."""
    response = requests.get(f"{sim.url}/v2/nothing", timeout=common.TIMEOUT)
    assert response.status_code == 404
    assert "error" in response.json()


def test_paid_life(sim: Simulator) -> None:
    """A "paid" order walks ToSend, Pending, Delivered, Ontvangen, Betaald, Paid and then stops."""
    order_id = sim.billit.create_order()
    first = billit.get_order(sim, order_id).json()
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

    pending = billit.order_at_next_stage(sim, order_id)
    assert pending["OrderStatus"] == "ToPay" and pending["IsSent"] is True
    assert pending["CurrentDocumentDeliveryDetails"] == {
        "IsDocumentDelivered": False,
        "DocumentDeliveryStatus": "Pending",
    }
    assert pending["Messages"] == []

    delivered = billit.order_at_next_stage(sim, order_id)
    details = delivered["CurrentDocumentDeliveryDetails"]
    assert list(details) == ["DocumentDeliveryDate", "IsDocumentDelivered", "DocumentDeliveryStatus"]
    assert billit.BILLIT_TS.match(details["DocumentDeliveryDate"])
    assert details["IsDocumentDelivered"] is True and details["DocumentDeliveryStatus"] == "Delivered"
    assert delivered["OrderStatus"] == "ToPay"
    [outgoing] = delivered["Messages"]
    assert list(outgoing) == [
        "FileID", "CreationDate", "TransportType", "Success", "Trials", "Destination", "MessageDirection",
    ]
    assert common.UUID.match(outgoing["FileID"]) and billit.BILLIT_TS.match(outgoing["CreationDate"])
    assert outgoing["TransportType"] == "Peppol" and outgoing["Success"] is True
    assert outgoing["Trials"] == 1 and outgoing["Destination"] == "0208:0446725877"
    assert outgoing["MessageDirection"] == "Outgoing"

    received = billit.order_at_next_stage(sim, order_id)
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

    imr_paid = billit.order_at_next_stage(sim, order_id)
    assert imr_paid["CurrentDocumentDeliveryDetails"]["DocumentDeliveryInfo"] == "Betaald"
    assert [m.get("Description") for m in imr_paid["Messages"]] == [
        None,
        "AB: The document has been successfully received.",
        "PD: The document has been paid.",
    ]
    assert imr_paid["Messages"][2]["MessageDirection"] == "Incoming"
    # The IMR does not mark the order paid in Billit; the seller does that later.
    assert imr_paid["OrderStatus"] == "ToPay" and imr_paid["Paid"] is False and imr_paid["PaidDate"] is None

    paid = billit.order_at_next_stage(sim, order_id)
    assert paid["OrderStatus"] == "Paid" and paid["Paid"] is True
    assert billit.BILLIT_TS.match(paid["PaidDate"])
    assert paid["LastModified"] > imr_paid["LastModified"] > received["LastModified"] > first["LastModified"]

    sim.clock.advance(sim.config.stage_seconds * 10)
    assert billit.get_order(sim, order_id).json() == paid
    assert sim.billit.orders() == [
        {"id": order_id, "scenario": "paid", "stage": 5, "final_stage": 5, "OrderStatus": "Paid"}
    ]


def test_refused_life(sim: Simulator) -> None:
    """A "refused" order walks ToSend, Pending, Error (InvalidInvoice), Credited."""
    order_id = sim.billit.create_order(scenario="refused")
    assert billit.get_order(sim, order_id).json()["OrderStatus"] == "ToSend"
    pending = billit.order_at_next_stage(sim, order_id)
    assert pending["CurrentDocumentDeliveryDetails"]["DocumentDeliveryStatus"] == "Pending"

    refused = billit.order_at_next_stage(sim, order_id)
    details = refused["CurrentDocumentDeliveryDetails"]
    assert list(details) == [
        "DocumentRefusedDate", "DocumentRefusedReasonTC", "DocumentRefusedInfo", "IsDocumentDelivered",
        "DocumentDeliveryStatus",
    ]
    assert billit.BILLIT_TS.match(details["DocumentRefusedDate"])
    assert details["DocumentRefusedReasonTC"] == "InvalidInvoice"
    assert details["DocumentRefusedInfo"] == (
        "Inconsistency between VAT number and tax code of the recipient of the invoice (acquirer)"
    )
    assert details["IsDocumentDelivered"] is False and details["DocumentDeliveryStatus"] == "Error"

    credited = billit.order_at_next_stage(sim, order_id)
    assert credited["OrderStatus"] == "Credited"
    assert credited["CurrentDocumentDeliveryDetails"] == details
    sim.clock.advance(100)
    assert billit.get_order(sim, order_id).json() == credited


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator) -> None:
    """Polling twice within one stage returns exactly the same bytes."""
    order_id = sim.billit.create_order()
    sim.clock.advance(sim.config.stage_seconds * 3)
    first = billit.get_order(sim, order_id).content
    sim.clock.advance(sim.config.stage_seconds / 2)
    assert billit.get_order(sim, order_id).content == first


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
    assert billit.get_order(sim, 1001).json()["OrderStatus"] == "Paid"
    with pytest.raises(ValueError):
        sim.billit.set_stage(1002, 4)


def test_seeded_orders_and_describe() -> None:
    """Seeded orders exist from construction and describe() shows the env lines to export."""
    with common.running(seed_orders=3) as seeded:
        assert [o["id"] for o in seeded.billit.orders()] == [1001, 1002, 1003]
        text = seeded.describe()
        assert f"export POLLER_BILLIT__BASE_URL={seeded.url}" in text
        assert "export POLLER_BILLIT__API_KEY=sim-billit-key" in text
        assert "export POLLER_BILLIT__PARTY_ID=1234" in text
        assert "1003" in text
        assert requests.get(f"{seeded.url}/_sim/health", timeout=common.TIMEOUT).json()["status"] == "ok"


def test_keep_alive_reuses_one_connection(sim: Simulator) -> None:
    """Two GETs on one requests.Session travel over a single TCP connection."""
    order_id = sim.billit.create_order()
    with requests.Session() as session:
        for _ in range(2):
            response = session.get(f"{sim.url}/v1/orders/{order_id}", headers=billit.AUTH, timeout=common.TIMEOUT)
            assert response.status_code == 200
            assert response.headers["Content-Length"] == str(len(response.content))
    assert sim.stats()["connections"] == 1
    assert sim.stats()["requests"]["billit"]["total"] == 2
