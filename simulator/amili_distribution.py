"""Fake of Amili Norway Distribution's (Compello) ``POST /send/pstatus`` (seed 000, PROVIDERS.md section 1).

Each invoice follows a scripted life (a *scenario*) on the shared SimClock, one
stage every ``stage_seconds`` simulated seconds. The body at a given stage is a
pure function of the invoice and the stage, so polling within a stage returns
the same bytes.

Decisions where the docs are silent (PROVIDERS.md marks them [U]):

* The request body names the invoice as ``{"Identifier": ...}`` or
  ``{"InvoiceNo": ...}``, at top level or nested as ``{"Invoice": {...}}`` (the
  send call's names). Keys match case-insensitively, as ASP.NET model binding does.
  When both are given the Identifier is tried first, then the invoice number.
* No auth by default (the page documents none). With option
  ``amili_distribution_token`` set, ``Authorization: Bearer <token>`` is required.
  That token is static (issued elsewhere, by the Partner API), so there is no
  token endpoint and ``expire_tokens()`` has nothing to expire.
* Errors are ASP.NET Web API's ``{"Message": ...}``.
* ``InvoiceData`` is an empty string (its content is unknown); ``InvoiceLink`` is
  empty until the request is Completed; ``DeliveryTime`` is null until delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from simulator.amili_collection_bodies import kid_mod10
from simulator.config import SimulatorConfig
from simulator.fake import AdminItems, FakeProvider, Item
from simulator.router import HttpError, Request, Response, Router, json_response

NAME = "amili_distribution"

# Last stage of each scenario; after it nothing changes.
SCENARIOS: dict[str, int] = {"ok": 3, "failed": 2, "handled": 3}

# Request status, top-level "Status" (seed 000).
STATUS_NEW, STATUS_PENDING, STATUS_COMPLETED = 1, 2, 3

CHANNEL = "EHF"
FAILED_LOG_TEXT = "Invalid EHF: missing buyer reference"
HANDLED_LOG_TEXT = "Handled by Compello Support: buyer reference added and invoice resent"
PENDING_LOG_TEXT = "Sent to the receiver's access point, waiting for receipt"
OK_LOG_TEXT = "Receipt received from the receiver's access point"
COMPANY = "Simulated Seller AS"
# A link host that can never resolve (RFC 2606), so nobody mistakes it for Compello's.
LINK_BASE = "https://distribution.sim.invalid/lookup"

DENIED = "Authorization has been denied for this request."
NOT_FOUND = "Invoice not found"
FIRST_INVOICE_NO = 250001
FIRST_TRANSACTION_RID = 7_300_001

_RECEIPT_NAMESPACE = uuid.UUID("0b7f9a1e-3c5d-5e2f-8a41-6d2c9b0e7f35")


def compello_timestamp(moment: datetime) -> str:
    """Format like the docs' ``2025-09-23T11:10:15``: no zone, no fraction."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def error_response(status: int, message: str) -> Response:
    """ASP.NET Web API's error body ``{"Message": ...}`` with the given status."""
    return json_response(status, {"Message": message})


@dataclass
class _Invoice(Item):
    identifier: str
    invoice_no: str
    seq: int


class FakeAmiliDistribution(FakeProvider[_Invoice]):
    """The fake Distribution pstatus API plus its Python and admin controls."""

    name = NAME
    noun = "invoice"
    id_field = "Identifier"
    described = {"invoices": ("Identifier", "InvoiceNo", "Status", "TransactionStatus")}
    fault_errors = {401: (DENIED,), 404: (NOT_FOUND,), 429: ("Too many requests, retry later",)}

    def _configure(self, config: SimulatorConfig) -> None:
        token = self.options.get("amili_distribution_token")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("amili_distribution_token must be a non-empty string when set")
        #: Static (issued elsewhere, by the Partner API): no token endpoint, nothing to expire.
        self.token: str | None = token
        self._invoices: dict[str, _Invoice] = {}
        self._by_number: dict[str, str] = {}
        self._next_seq = 0
        scenarios = tuple(SCENARIOS)
        for index in range(self._seed("amili_distribution_seed")):
            self.create_invoice(scenario=scenarios[index % len(scenarios)])

    def error(self, status: int, *args: Any) -> Response:
        """ASP.NET Web API's ``{"Message": ...}``."""
        return error_response(status, *args)

    # ---- Python API -------------------------------------------------------------

    def create_invoice(self, identifier: str | None = None, invoice_no: str | None = None, scenario: str = "ok") -> str:
        """Create an invoice at stage 0 now; return its identifier (both it and the number find it)."""
        self._check_scenario(scenario, SCENARIOS)
        for label, value in (("identifier", identifier), ("invoice_no", invoice_no)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{label} must be a non-empty string, got {value!r}")
        born = self.clock.now()
        with self._lock:
            seq = self._next_seq
            if identifier is None:
                identifier = _free(lambda n: f"SIM-DIST-{n:04d}", self._invoices, seq + 1)
            elif identifier in self._invoices:
                raise ValueError(f"invoice with Identifier {identifier!r} already exists")
            if invoice_no is None:
                invoice_no = _free(lambda n: str(FIRST_INVOICE_NO + n - 1), self._by_number, seq + 1)
            elif invoice_no in self._by_number:
                raise ValueError(f"invoice with InvoiceNo {invoice_no!r} already exists")
            self._next_seq += 1
            self._invoices[identifier] = _Invoice(scenario, born, identifier, invoice_no, seq)
            self._by_number[invoice_no] = identifier
        return identifier

    def invoices(self) -> list[dict[str, Any]]:
        """List invoices as ``{"Identifier", "InvoiceNo", "scenario", "stage", "final_stage", "Status", ...}``."""
        result = []
        for invoice, stage in self._staged(self._invoices.values):
            body = self._render(invoice, stage)
            transaction = body["Transaction"]
            ids = {"Identifier": invoice.identifier, "InvoiceNo": invoice.invoice_no}
            status = None if transaction is None else transaction["Status"]
            result.append(self._entry(ids, invoice, stage, Status=body["Status"], TransactionStatus=status))
        return result

    def status_body(self, identifier: str) -> dict[str, Any]:
        """Return the body ``POST /send/pstatus`` would answer for this invoice now."""
        invoice = self._get(identifier)
        return self._render(invoice, self._stage(invoice))

    # ---- server hooks -----------------------------------------------------------

    def _register_api(self, router: Router) -> None:
        router.add("POST", "/send/pstatus", self._http_pstatus, label=NAME)

    def _admin_items(self) -> AdminItems:
        return {"invoices": (self.invoices, self._admin_create)}

    def _describe_header(self) -> list[str]:
        auth = "Bearer token required" if self.token else "no auth"
        return [f"Amili Distribution invoices ({self.stage_seconds:g} sim-seconds per stage; {auth}):"]

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake."""
        env = {"POLLER_AMILI_DISTRIBUTION__BASE_URL": base_url}
        if self.token:
            env["POLLER_AMILI_DISTRIBUTION__TOKEN"] = self.token
        return env

    # ---- HTTP handlers ----------------------------------------------------------

    def _http_pstatus(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        return self._answer(self.faults.take_any(NAME, self._refs(request)), lambda: self._answer_status(request))

    def _answer_status(self, request: Request) -> Response:
        try:
            identifier, invoice_no = _requested(request)
        except HttpError as exc:
            return error_response(400, exc.message)
        invoice = self._find(identifier, invoice_no)
        if invoice is None:
            return error_response(404, NOT_FOUND)
        return json_response(200, self._render(invoice, self._stage(invoice)))

    def _authenticate(self, request: Request) -> Response | None:
        """Check the optional bearer token; return the 401 to send, or None when allowed."""
        if self.token is None:
            return None
        scheme, _, credentials = (request.header("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or credentials.strip() != self.token:
            return error_response(401, DENIED)
        return None

    def _lookup(self, item_id: Any) -> _Invoice | None:
        return self._invoices.get(item_id)

    def _final_stage(self, item: _Invoice) -> int:
        return SCENARIOS[item.scenario]

    def _find(self, identifier: str | None, invoice_no: str | None) -> _Invoice | None:
        with self._lock:
            if identifier is not None and identifier in self._invoices:
                return self._invoices[identifier]
            if invoice_no is not None and invoice_no in self._by_number:
                return self._invoices[self._by_number[invoice_no]]
        return None

    def _refs(self, request: Request) -> list[str]:
        """The refs of a request: a fault armed for an invoice hits whichever way it is asked for."""
        try:
            identifier, invoice_no = _requested(request)
        except HttpError:
            return []
        invoice = self._find(identifier, invoice_no)
        candidates = [c for c in (identifier, invoice_no) if c is not None]
        if invoice is not None:
            candidates += [invoice.identifier, invoice.invoice_no]
        return candidates

    # ---- admin handlers ---------------------------------------------------------

    def _admin_create(self, request: Request) -> Response:
        # The Python names and the API's names are both accepted.
        data = self._admin_fields(request, {"identifier", "Identifier", "invoice_no", "InvoiceNo", "scenario"})
        aliases = {"Identifier": "identifier", "InvoiceNo": "invoice_no"}
        values: dict[str, Any] = {aliases.get(key, key): value for key, value in data.items()}
        scenario = self._admin_text(values, "scenario", "ok")
        invoice_no: Any = values.get("invoice_no")
        if isinstance(invoice_no, int) and not isinstance(invoice_no, bool):
            invoice_no = str(invoice_no)
        identifier = self._try_create(self.create_invoice, values.get("identifier"), invoice_no, scenario)
        invoice = self._get(identifier)
        return json_response(
            201, {"Identifier": identifier, "InvoiceNo": invoice.invoice_no, "scenario": invoice.scenario}
        )

    # ---- invoice life -----------------------------------------------------------

    def _render(self, invoice: _Invoice, stage: int) -> dict[str, Any]:
        """Build the pstatus body for ``invoice`` at ``stage`` (seed 000's shape)."""
        received = self._moment(invoice, 0)
        receipt = str(uuid.uuid5(_RECEIPT_NAMESPACE, f"{NAME}/{invoice.identifier}"))
        filename = f"EHF_{received.strftime('%Y%m%d%H%M%S')}_{invoice.seq + 1:04d}.xml"
        status = (STATUS_NEW, STATUS_PENDING)[stage] if stage < 2 else STATUS_COMPLETED
        transaction = None if stage < 2 else self._transaction(invoice, stage, filename)
        return {
            "ReceiptId": receipt,
            "Filename": filename,
            "InvoiceData": "",
            "Received": compello_timestamp(received),
            "Status": status,
            "Transaction": transaction,
            "InvoiceLink": f"{LINK_BASE}/{receipt}" if status == STATUS_COMPLETED else "",
        }

    def _transaction(self, invoice: _Invoice, stage: int, filename: str) -> dict[str, Any]:
        """The ``Transaction`` object once the request is Completed (stage 2 on)."""
        processed = compello_timestamp(self._moment(invoice, 2))
        now = compello_timestamp(self._moment(invoice, stage))
        invoice_day = self._moment(invoice, 0).replace(hour=0, minute=0, second=0, microsecond=0)
        amount_ex_vat = round(1000 + (invoice.seq * 137) % 9000 + ((invoice.seq * 29) % 100) / 100, 2)

        delivery_time: str | None = None
        correlation = ""
        if invoice.scenario == "ok":
            if stage >= 3:
                tx_status, log_text, channel_status = "OK", OK_LOG_TEXT, "Delivered"
                delivery_time, correlation = now, "Matched"
            else:
                tx_status, log_text, channel_status = "Pending", PENDING_LOG_TEXT, "Sent"
            channel_update = now
        else:
            tx_status, log_text, channel_status = "Failed", FAILED_LOG_TEXT, "Rejected"
            # The channel said no at stage 2; Support's later handling is not a channel event.
            channel_update = processed
            if invoice.scenario == "handled" and stage >= 3:
                tx_status, log_text = "Handled", f"{FAILED_LOG_TEXT}; {HANDLED_LOG_TEXT}"

        return {
            "TransactionRid": FIRST_TRANSACTION_RID + invoice.seq,
            "LogTime": now,
            "DeliveryTime": delivery_time,
            "Status": tx_status,
            "Company": COMPANY,
            "Channel": CHANNEL,
            "RequestedChannel": CHANNEL,
            "ActualChannel": CHANNEL,
            "Direction": "Out",
            "InvoiceType": "Invoice",
            "InvoiceNumber": invoice.invoice_no,
            "Filename": filename,
            "LogText": log_text,
            "InvoiceeName": f"Simulated Buyer {invoice.seq + 1} AS",
            "InvoiceDate": compello_timestamp(invoice_day),
            "DueDate": compello_timestamp(invoice_day + timedelta(days=14)),
            "Amount": round(amount_ex_vat * 1.25, 2),
            "AmountExVat": amount_ex_vat,
            "KID": kid_mod10(f"{FIRST_INVOICE_NO + invoice.seq:08d}"),
            "ChannelStatus": channel_status,
            "ChannelUpdateTime": channel_update,
            "CorrelationStatus": correlation,
        }


def _free(make: Callable[[int], str], taken: dict[str, Any], start: int) -> str:
    number = start
    while make(number) in taken:
        number += 1
    return make(number)


def _requested(request: Request) -> tuple[str | None, str | None]:
    """Read ``(Identifier, InvoiceNo)`` from a pstatus body; HttpError(400) when neither is usable."""
    if not request.body.strip():
        raise HttpError(400, "The request body is empty: give Identifier or InvoiceNo.")
    data = request.json()
    if not isinstance(data, dict):
        raise HttpError(400, "The request body must be a JSON object with Identifier or InvoiceNo.")
    found: dict[str, str | None] = {"identifier": None, "invoiceno": None}
    nested = _field(data, "invoice")
    for source in (data, nested if isinstance(nested, dict) else {}):
        for key in found:
            value = _field(source, key)
            if found[key] is not None or value is None:
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise HttpError(400, f"{'Identifier' if key == 'identifier' else 'InvoiceNo'} must be a string.")
            found[key] = value.strip() or None
    if found["identifier"] is None and found["invoiceno"] is None:
        raise HttpError(400, "Give Identifier or InvoiceNo (top level or inside Invoice).")
    return found["identifier"], found["invoiceno"]


def _field(data: dict[str, Any], name: str) -> Any:
    # ASP.NET binds JSON properties case-insensitively.
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None
