"""Fake of Billit's ``GET /v1/orders/{OrderID}`` (seed 002, PROVIDERS.md section 5).

Each order follows a scripted life (a *scenario*) on the shared SimClock, one
stage every ``stage_seconds`` simulated seconds. The body at a given stage is a
pure function of the order and the stage, so polling within a stage returns the
same bytes.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from simulator.clock import SimClock
from simulator.faults import FaultPlan, render_fault
from simulator.router import HttpError, Request, Response, Router, json_response

NAME = "billit"
FIRST_ORDER_ID = 1001

# Last stage of each scenario; after it nothing changes.
SCENARIOS: dict[str, int] = {"paid": 5, "refused": 3}

DESTINATION = "0208:0446725877"
REFUSED_REASON = "InvalidInvoice"
REFUSED_INFO = "Inconsistency between VAT number and tax code of the recipient of the invoice (acquirer)"

_FILE_ID_NAMESPACE = uuid.UUID("6f1c3a52-4d0e-5b8a-9c1e-2a7d4b9e0f11")


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
class _Order:
    order_id: int
    scenario: str
    # Simulated instant the order was at stage 0; stage k starts at born + k * stage_seconds.
    born: float


class BillitProvider:
    """The fake Billit API plus its Python and admin controls."""

    name = NAME

    def __init__(
        self,
        clock: SimClock,
        faults: FaultPlan,
        *,
        api_key: str = "sim-billit-key",
        party_id: str = "1234",
        stage_seconds: float = 10.0,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        if stage_seconds <= 0:
            raise ValueError(f"stage_seconds must be > 0, got {stage_seconds}")
        self.clock = clock
        self.faults = faults
        self.api_key = api_key
        self.party_id = str(party_id)
        self.stage_seconds = float(stage_seconds)
        self._wait = wait
        self._lock = threading.Lock()
        self._orders: dict[int, _Order] = {}
        self._next_id = FIRST_ORDER_ID

    # ---- Python API -------------------------------------------------------------

    def create_order(self, order_id: int | None = None, scenario: str = "paid") -> int:
        """Create an order at stage 0 now; return its OrderID (auto ids start at 1001)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
        if order_id is not None and (
            not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1
        ):
            raise ValueError(f"OrderID must be a positive integer, got {order_id!r}")
        born = self.clock.now()
        with self._lock:
            if order_id is None:
                while self._next_id in self._orders:
                    self._next_id += 1
                order_id = self._next_id
                self._next_id += 1
            elif order_id in self._orders:
                raise ValueError(f"order {order_id} already exists")
            self._orders[order_id] = _Order(order_id, scenario, born)
        return order_id

    def orders(self) -> list[dict[str, Any]]:
        """List orders as ``{"id", "scenario", "stage", "final_stage", "OrderStatus"}``."""
        now = self.clock.now()
        with self._lock:
            snapshot = sorted(self._orders.values(), key=lambda o: o.order_id)
        result = []
        for order in snapshot:
            stage = self._stage(order, now)
            result.append(
                {
                    "id": order.order_id,
                    "scenario": order.scenario,
                    "stage": stage,
                    "final_stage": SCENARIOS[order.scenario],
                    "OrderStatus": self._render(order, stage)["OrderStatus"],
                }
            )
        return result

    def stage_of(self, order_id: int) -> int:
        """Return the stage an order is at now."""
        return self._stage(self._get(order_id), self.clock.now())

    def set_stage(self, order_id: int, stage: int) -> None:
        """Jump an order to ``stage`` now; it keeps moving on from there."""
        order = self._get(order_id)
        final = SCENARIOS[order.scenario]
        if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= final:
            raise ValueError(f"stage must be an integer 0..{final} for scenario {order.scenario!r}")
        with self._lock:
            order.born = self.clock.now() - stage * self.stage_seconds

    def order_body(self, order_id: int) -> dict[str, Any]:
        """Return the order object exactly as ``GET /v1/orders/{id}`` would now."""
        order = self._get(order_id)
        return self._render(order, self._stage(order, self.clock.now()))

    # ---- server hooks -----------------------------------------------------------

    def register(self, router: Router) -> None:
        """Add the Billit API route and the ``/_sim/billit/...`` admin routes."""
        router.add("GET", "/v1/orders/{order_id}", self._http_get_order, label=NAME)
        router.add("GET", "/_sim/billit/orders", self._admin_list, label="_sim")
        router.add("POST", "/_sim/billit/orders", self._admin_create, label="_sim")
        router.add("POST", "/_sim/billit/orders/{order_id}/stage", self._admin_set_stage, label="_sim")

    def describe_lines(self) -> list[str]:
        """Human lines listing the orders and where they are in their life."""
        lines = [f"Billit orders ({self.stage_seconds:g} sim-seconds per stage):"]
        for info in self.orders():
            lines.append(
                f"  {info['id']}  scenario={info['scenario']:<8} stage {info['stage']}/{info['final_stage']}"
                f"  OrderStatus={info['OrderStatus']}"
            )
        if len(lines) == 1:
            lines.append("  (none yet; POST /_sim/billit/orders to add one)")
        return lines

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake."""
        return {
            "POLLER_BILLIT__BASE_URL": base_url,
            "POLLER_BILLIT__API_KEY": self.api_key,
            "POLLER_BILLIT__PARTY_ID": self.party_id,
        }

    # ---- HTTP handlers ----------------------------------------------------------

    def _http_get_order(self, request: Request, order_id: str) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        # Normalise "01001" to "1001" so a fault armed for an order hits however it is spelled.
        ref = str(int(order_id)) if order_id.isascii() and order_id.isdigit() else order_id
        fault = self.faults.take(NAME, ref)
        if fault is not None:
            faulted = render_fault(
                fault,
                normal=lambda: self._answer(order_id),
                error=self._fault_error,
                wait=self._wait,
            )
            if faulted is not None:
                return faulted
        return self._answer(order_id)

    def _answer(self, raw_id: str) -> Response:
        if not (raw_id.isascii() and raw_id.isdigit()):
            return error_response(400, "GenericError", f"OrderID must be an integer, got '{raw_id}'")
        with self._lock:
            order = self._orders.get(int(raw_id))
        if order is None:
            return error_response(404, "NotFound", "Order not found")
        return json_response(200, self._render(order, self._stage(order, self.clock.now())))

    def _authenticate(self, request: Request) -> Response | None:
        """Check ApiKey + PartyID; return the 401 to send, or None when allowed."""
        api_key = request.header("ApiKey")
        if api_key is None:
            authorization = request.header("Authorization") or ""
            if authorization.lower().startswith("bearer "):
                # OAuth2 is not simulated yet, so no bearer token can be valid.
                # This is where token validation goes once /OAuth2/token exists.
                return error_response(401, "Unauthorized", "Bearer token is not valid")
            return error_response(401, "Unauthorized", "Missing ApiKey header")
        if api_key != self.api_key:
            return error_response(401, "Unauthorized", "Invalid ApiKey")
        party_id = request.header("PartyID")
        if party_id is None:
            return error_response(401, "Unauthorized", "Missing PartyID header")
        if party_id.strip() != self.party_id:
            return error_response(401, "Unauthorized", "ApiKey is not valid for this PartyID")
        return None

    @staticmethod
    def _fault_error(status: int) -> Response:
        if status == 401:
            return error_response(401, "Unauthorized", "Invalid ApiKey")
        if status == 404:
            return error_response(404, "NotFound", "Order not found")
        if status == 429:
            return error_response(429, "TooManyRequests", "Too many requests, retry later")
        return error_response(status, "GenericError", "Unexpected error")

    # ---- admin handlers ---------------------------------------------------------

    def _admin_list(self, request: Request) -> Response:
        return json_response(200, {"orders": self.orders()})

    def _admin_create(self, request: Request) -> Response:
        data = request.json_object()
        unknown = set(data) - {"OrderID", "scenario"}
        if unknown:
            fields = ", ".join(sorted(unknown))
            raise HttpError(400, f"unknown field(s): {fields}; allowed: OrderID, scenario")
        scenario = data.get("scenario", "paid")
        if not isinstance(scenario, str):
            raise HttpError(400, "scenario must be a string")
        try:
            order_id = self.create_order(data.get("OrderID"), scenario)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(201, {"OrderID": order_id})

    def _admin_set_stage(self, request: Request, order_id: str) -> Response:
        data = request.json_object()
        if not order_id.isdigit():
            raise HttpError(400, f"OrderID must be an integer, got {order_id!r}")
        try:
            self.set_stage(int(order_id), data.get("stage"))  # type: ignore[arg-type]
        except KeyError as exc:
            raise HttpError(404, str(exc.args[0])) from exc
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(200, {"OrderID": int(order_id), "stage": self.stage_of(int(order_id))})

    # ---- order life -------------------------------------------------------------

    def _get(self, order_id: int) -> _Order:
        with self._lock:
            order = self._orders.get(order_id)
        if order is None:
            raise KeyError(f"order {order_id} does not exist")
        return order

    def _stage(self, order: _Order, now: float) -> int:
        # The epsilon absorbs float error so advance(stage_seconds) lands exactly on the next stage.
        reached = int((now - order.born) / self.stage_seconds + 1e-9)
        return max(0, min(SCENARIOS[order.scenario], reached))

    def _stamp(self, order: _Order, stage: int) -> str:
        """Timestamp of the moment ``order`` reached ``stage``.

        A deterministic sub-second offset per (order, stage) makes the fraction
        look like Billit's (".563", ".23") without depending on real time.
        """
        digest = hashlib.sha256(f"{order.order_id}:{stage}".encode()).digest()
        jitter = (int.from_bytes(digest[:2], "big") % 1000) / 1000 * min(1.0, self.stage_seconds) * 0.5
        return billit_timestamp(self.clock.wall(order.born + stage * self.stage_seconds + jitter))

    def _file_id(self, order: _Order, message: str) -> str:
        return str(uuid.uuid5(_FILE_ID_NAMESPACE, f"billit/{order.order_id}/{message}"))

    def _message(self, order: _Order, stage: int, key: str, description: str | None) -> dict[str, Any]:
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

    def _render(self, order: _Order, stage: int) -> dict[str, Any]:
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
