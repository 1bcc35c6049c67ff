"""Billit normalization, against the seed's own examples (tests/data/billit/)."""

from __future__ import annotations

import copy

import pytest

from tests.samples import billit_order
from worker.errors import ProviderResponseInvalid
from worker.providers.billit import describe_error, normalize

OUTGOING = {
    "description": None, "file_id": "845e4774-7d76-4d2c-a7de-e6d790cb57c6",
    "creation_date": "2025-05-07T14:08:07.813", "transport_type": "Peppol", "success": True,
    "trials": 1, "destination": "0208:0446725877", "direction": "Outgoing",
}
RECEIVED = {
    "description": "AB: The document has been successfully received.",
    "file_id": "7ee8b70c-3dd7-423a-8269-79f8bc49e0c5", "creation_date": "2025-05-07T14:09:54.203",
    "transport_type": "Peppol", "success": True, "trials": 0, "destination": "0208:0446725877",
    "direction": "Incoming",
}
PAID = {
    "description": "PD: The document has been paid.", "file_id": "b39065a9-8c82-4beb-9c04-010435f4c5fa",
    "creation_date": "2025-05-07T14:25:11.427", "transport_type": "Peppol", "success": True,
    "trials": 0, "destination": "0208:0446725877", "direction": "Incoming",
}


def _delivery(**kw: object) -> dict[str, object]:
    base = dict.fromkeys(("is_delivered", "status", "date", "info", "refused_date", "refused_reason",
                          "refused_info"))
    base.update(kw)
    return base


#: The delivery details of the seed's refused order (delivery_error.fragment).
REFUSED = _delivery(is_delivered=False, status="Error", refused_date="2025-04-28T19:30:03.203",
                    refused_reason="InvalidInvoice",
                    refused_info="Inconsistency between VAT number and tax code of the recipient of the "
                                 "invoice (acquirer)")

CASES = [
    pytest.param(
        "delivery_delivered.fragment", "ToPay", "delivered", False,
        _delivery(is_delivered=True, status="Delivered", date="2025-04-23T12:57:23.23"), [],
        id="seed-delivered"),
    pytest.param(
        "delivery_pending.fragment", "ToPay", "pending_delivery", False,
        _delivery(is_delivered=False, status="Pending"), [], id="seed-pending"),
    pytest.param("delivery_error.fragment", "ToPay", "refused", False, REFUSED, [], id="seed-error"),
    pytest.param(
        "messages_received.fragment", "ToPay", "received", False,
        _delivery(is_delivered=True, status="Delivered", date="2025-05-07T14:09:17.563", info="Ontvangen"),
        [OUTGOING, RECEIVED], id="seed-imr-received"),
    pytest.param(
        "messages_paid.fragment", "ToPay", "paid", True,
        _delivery(is_delivered=True, status="Delivered", date="2025-05-07T14:09:17.563", info="Betaald"),
        [OUTGOING, RECEIVED, PAID], id="seed-imr-paid"),
    pytest.param(None, "ToSend", "to_send", False, None, [], id="to-send-no-details"),
    pytest.param(None, "Paid", "paid", True, None, [], id="order-paid"),
    pytest.param(None, "Canceled", "canceled", True, None, [], id="order-canceled"),
    pytest.param(None, "Credited", "credited", True, None, [], id="order-credited"),
    pytest.param(None, "SomethingNew", "unknown", False, None, [], id="unknown-order-status-tolerated"),
    pytest.param("delivery_error.fragment", "Credited", "credited", True, REFUSED, [], id="refused-then-credited"),
]


@pytest.mark.parametrize(("fragment", "order_status", "status", "terminal", "delivery", "messages"), CASES)
def test_normalize_seed_examples(fragment, order_status, status, terminal, delivery, messages):
    """Every normalized field of each seed example, and the raw body kept verbatim."""
    raw = billit_order(fragment, OrderID=1001, OrderStatus=order_status)
    original = copy.deepcopy(raw)
    doc = normalize(raw, ref="1001")
    assert doc.status == status
    assert doc.terminal is terminal
    assert doc.fields == {"order_status": order_status, "delivery": delivery, "messages": messages}
    assert doc.raw == original


def test_imr_code_wins_over_language_dependent_info():
    """The status comes from the IMR code, not the localized DocumentDeliveryInfo text."""
    raw = billit_order("messages_received.fragment", OrderID=7, OrderStatus="ToPay")
    raw["CurrentDocumentDeliveryDetails"]["DocumentDeliveryInfo"] = "Reçu"
    assert normalize(raw).status == "received"


def test_messages_reordered_by_provider_give_same_fields():
    """A provider returning the same messages in another order is not a change."""
    raw = billit_order("messages_paid.fragment", OrderID=7, OrderStatus="ToPay")
    shuffled = copy.deepcopy(raw)
    shuffled["Messages"].reverse()
    assert normalize(raw).fields == normalize(shuffled).fields


@pytest.mark.parametrize(("body", "needle"), [
    ([], "not an object"),
    ({"OrderStatus": "ToPay"}, "no OrderID"),
    ({"OrderID": 2, "OrderStatus": "ToPay"}, "asked for order 1001"),
    ({"OrderID": 1001, "OrderStatus": 5}, "OrderStatus is a int"),
    ({"OrderID": 1001, "CurrentDocumentDeliveryDetails": "Delivered"}, "CurrentDocumentDeliveryDetails"),
    ({"OrderID": 1001, "Messages": {"a": 1}}, "Messages"),
    ({"OrderID": 1001, "Messages": ["x"]}, "Messages"),
])
def test_schema_drift_is_a_clear_error(body, needle):
    """Bodies that are not an order raise ProviderResponseInvalid naming what is wrong."""
    with pytest.raises(ProviderResponseInvalid, match=needle):
        normalize(body, ref="1001")


def test_missing_optional_fields_are_tolerated():
    """An order with only an id normalizes to nulls, status unknown, not an error."""
    doc = normalize({"OrderID": 1001}, ref="1001")
    assert (doc.status, doc.terminal) == ("unknown", False)
    assert doc.fields == {"order_status": None, "delivery": None, "messages": []}


@pytest.mark.parametrize(("body", "text"), [
    ({"errors": [{"Code": "InvalidAccessToken"}]}, "InvalidAccessToken"),
    ({"errors": [{"Code": "NotFound", "Description": "Order not found"}]}, "NotFound: Order not found"),
    ({"message": "nope"}, None),
    ("text", None),
])
def test_describe_error(body, text):
    """Billit's {"errors":[{"Code":...}]} bodies become a short message."""
    assert describe_error(body) == text
