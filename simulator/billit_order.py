"""The bodies of the Billit fake: an order at each stage of its scenario, and Billit's error envelope.

A body is a pure function of the order and its stage, so polling within a stage returns the same
bytes; ``simulator.billit`` serves them one at a time, ``simulator.billit_list`` as a list.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from simulator.fake import Bodies, Item
from simulator.router import Response, json_response

# Last stage of each scenario; after it nothing changes.
SCENARIOS: dict[str, int] = {"paid": 5, "refused": 3}

DESTINATION = "0208:0446725877"
REFUSED_REASON = "InvalidInvoice"
REFUSED_INFO = "Inconsistency between VAT number and tax code of the recipient of the invoice (acquirer)"

FILE_ID_NAMESPACE = uuid.UUID("6f1c3a52-4d0e-5b8a-9c1e-2a7d4b9e0f11")

def billit_timestamp(moment: datetime) -> str:
    """Format like Billit (.NET "yyyy-MM-ddTHH:mm:ss.FFF"): no zone, trailing zeros dropped.

    Billit sends e.g. ``2025-05-07T14:09:17.563`` and ``2025-03-26T14:30:48.11``,
    so clients must cope with one to three fraction digits, or none.
    """
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond // 1000:03d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def error_body(code: str, description: str) -> dict[str, Any]:
    """Billit's error envelope: ``{"errors": [{"Code": ..., "Description": ...}]}``."""
    return {"errors": [{"Code": code, "Description": description}]}


def error_response(status: int, code: str, description: str) -> Response:
    """A Billit error body with the given HTTP status."""
    return json_response(status, error_body(code, description))


@dataclass
class Order(Item):
    """An order; its OrderID also orders the list."""

    order_id: int


class OrderBodies(Bodies):
    """Renders orders as ``GET /v1/orders/{id}`` answers them."""

    def _stamp(self, order: Order, stage: int) -> str:
        """Timestamp of the moment ``order`` reached ``stage``.

        A deterministic sub-second offset per (order, stage) makes the fraction
        look like Billit's (".563", ".23") without depending on real time.
        """
        digest = hashlib.sha256(f"{order.order_id}:{stage}".encode()).digest()
        jitter = (int.from_bytes(digest[:2], "big") % 1000) / 1000 * min(1.0, self.stage_seconds) * 0.5
        return billit_timestamp(self.clock.wall(order.born + stage * self.stage_seconds + jitter))

    def _file_id(self, order: Order, message: str) -> str:
        return str(uuid.uuid5(FILE_ID_NAMESPACE, f"billit/{order.order_id}/{message}"))

    def _message(self, order: Order, stage: int, key: str, description: str | None) -> dict[str, Any]:
        incoming = description is not None
        message: dict[str, Any] = {}
        # Billit omits Description on the outgoing transport message (seed 002).
        if incoming:
            message["Description"] = description
        message.update(
            {
                "FileID": self._file_id(order, key),
                "CreationDate": self._stamp(order, stage),
                "TransportType": "Peppol",
                "Success": True,
                "Trials": 0 if incoming else 1,
                "Destination": DESTINATION,
                "MessageDirection": "Incoming" if incoming else "Outgoing",
            }
        )
        return message

    def render(self, order: Order, stage: int) -> dict[str, Any]:
        """Build the Billit order object for ``order`` at ``stage``."""
        oid = order.order_id
        created_day = self.clock.wall(order.born).replace(hour=0, minute=0, second=0, microsecond=0)
        total_excl = round(100 + (oid * 37) % 900 + ((oid * 13) % 100) / 100, 2)
        total_vat = round(total_excl * 0.21, 2)

        status = "ToSend" if stage == 0 else "ToPay"
        details: dict[str, Any] | None = None
        messages: list[dict[str, Any]] = []
        paid_date: str | None = None

        if stage >= 1:
            details = {"IsDocumentDelivered": False, "DocumentDeliveryStatus": "Pending"}
        if order.scenario == "paid":
            if stage >= 2:
                details = {
                    "DocumentDeliveryDate": self._stamp(order, 2),
                    "IsDocumentDelivered": True,
                    "DocumentDeliveryStatus": "Delivered",
                }
                messages.append(self._message(order, 2, "delivered", None))
            if stage >= 3:
                assert details is not None
                details = {
                    "DocumentDeliveryDate": details["DocumentDeliveryDate"],
                    "DocumentDeliveryInfo": "Ontvangen",
                    "IsDocumentDelivered": True,
                    "DocumentDeliveryStatus": "Delivered",
                }
                messages.append(
                    self._message(order, 3, "imr-ab", "AB: The document has been successfully received.")
                )
            if stage >= 4:
                assert details is not None
                details["DocumentDeliveryInfo"] = "Betaald"
                messages.append(self._message(order, 4, "imr-pd", "PD: The document has been paid."))
            if stage >= 5:
                # The IMR "paid" does not flip Billit's status; the seller records
                # payment later, which is what this stage stands for.
                status = "Paid"
                paid_date = self._stamp(order, 5)
        elif order.scenario == "refused":
            if stage >= 2:
                details = {
                    "DocumentRefusedDate": self._stamp(order, 2),
                    "DocumentRefusedReasonTC": REFUSED_REASON,
                    "DocumentRefusedInfo": REFUSED_INFO,
                    "IsDocumentDelivered": False,
                    "DocumentDeliveryStatus": "Error",
                }
            if stage >= 3:
                status = "Credited"

        body: dict[str, Any] = {
            "OrderID": oid,
            "OrderNumber": f"SIM-{oid}",
            "OrderType": "Invoice",
            "OrderDirection": "Income",
            "OrderStatus": status,
            "OrderDate": billit_timestamp(created_day),
            "ExpiryDate": billit_timestamp(created_day + timedelta(days=30)),
            "Currency": "EUR",
            "TotalExcl": total_excl,
            "TotalVAT": total_vat,
            "TotalIncl": round(total_excl + total_vat, 2),
            "Paid": paid_date is not None,
            "PaidDate": paid_date,
            "IsSent": stage >= 1,
            "LastModified": self._stamp(order, stage),
            "Created": self._stamp(order, 0),
            "CounterParty": {
                "PartyID": 500000 + oid,
                "DisplayName": f"Simulated Customer {oid} BV",
                "VATNumber": "BE" + DESTINATION.split(":", 1)[1],
            },
        }
        if details is not None:
            body["CurrentDocumentDeliveryDetails"] = details
        body["Messages"] = messages
        return body
