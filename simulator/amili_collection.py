"""Fake of Amili Norway's Debt.Collection API (seed 001, PROVIDERS.md section 2).

Serves ``GET /orgs/{orgId}/invoices/{invoiceId}``, ``GET /orgs/{orgId}/invoices`` (the list, in
``simulator.amili_collection_list``), ``GET /orgs/{orgId}/cases`` and
``GET /orgs/{orgId}/batches/{batchId}`` behind Identiverse client-credentials tokens from
``POST /token`` (shared with the ARM fake, see ``simulator.identity``).

Invoices and batches follow scripted lives (*scenarios*) on the SimClock, one stage every
``stage_seconds``; a body is a pure function of the item and its stage, so polling within a
stage returns the same bytes. ``legacy`` invoices spell statuses like the old Collection API
("Open", seed 001) instead of the AutoCollect API ("OPEN").
"""

from __future__ import annotations

import uuid
from typing import Any

from simulator.amili_collection_bodies import (
    BATCH_FINAL_STAGE,
    BATCH_OUTCOMES,
    CUSTOM_ID,
    ID_NAMESPACE,
    INVOICE_LIVES,
    Batch,
    CollectionBodies,
    Invoice,
)
from simulator.amili_collection_list import InvoiceList
from simulator.amili_query import CaseQuery, encode_cursor
from simulator.config import SimulatorConfig
from simulator.fake import AdminItems
from simulator.identity import TokenClientFake, challenge
from simulator.router import HttpError, Request, Response, Router, json_response

NAME = "amili_collection"
DEFAULT_CLIENT_ID = "sim-collection-client"
DEFAULT_CLIENT_SECRET = "sim-collection-secret"
#: The organization id of seed 001's example.
DEFAULT_ORG_ID = "497f6eca-6276-4993-bfeb-53cbbbba6f08"
RESOURCE = "https://api.amili.no/collection/v1"

def error_body(code: str, message: str) -> dict[str, Any]:
    """Amili's error envelope: ``{"summary": {"status": "ERROR"}, "errors": [{"code", "message"}]}``."""
    return {"summary": {"status": "ERROR"}, "errors": [{"code": code, "message": message}]}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """An Amili error body with the given HTTP status."""
    return json_response(status, error_body(code, message), headers)


def _success(data: Any, next_page_token: str | None = None, *, paged: bool = False) -> Response:
    summary: dict[str, Any] = {"status": "SUCCESS"}
    if paged:
        summary["nextPageToken"] = next_page_token
    return json_response(200, {"summary": summary, "data": data})


class FakeAmiliCollection(TokenClientFake[Invoice | Batch]):
    """The fake Debt.Collection API plus its Python and admin controls."""

    name = NAME
    noun = "invoice or batch"
    described = {"invoices": ("id", "legacy", "status", "type"), "batches": ("id", "status")}
    resource = RESOURCE
    default_client = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    fault_errors = {
        401: ("Unauthorized", "The access token is not valid"),
        404: ("NotFound", "Resource not found"),
        429: ("TooManyRequests", "Too many requests, retry later"),
    }

    def _configure(self, config: SimulatorConfig) -> None:
        super()._configure(config)
        self.org_id = str(self.options.get("amili_collection_org_id", DEFAULT_ORG_ID))
        self.bodies = CollectionBodies(self.clock, self.stage_seconds, self.org_id, self.client_id)
        self._invoices: dict[str, Invoice] = {}
        self._batches: dict[str, Batch] = {}
        self._seq = 0
        seed = self._seed("amili_collection_seed")
        for index in range(seed):
            # Alternate spellings so the demo shows both API generations.
            self.create_invoice(legacy=index % 2 == 1)
        if seed:
            self.create_batch()

    def error(self, status: int, *args: Any) -> Response:
        """Amili's ``{"summary", "errors": [{"code", "message"}]}``."""
        return error_response(status, *args)

    # ---- Python API -------------------------------------------------------------

    def create_invoice(self, invoice_id: str | None = None, scenario: str = "paid", legacy: bool = False) -> str:
        """Create an invoice (and its case) at stage 0 now; return its id (uuid-like when auto)."""
        self._check_scenario(scenario, INVOICE_LIVES)
        if not isinstance(legacy, bool):
            raise ValueError(f"legacy must be true or false, got {legacy!r}")
        born = self.clock.now()
        with self._lock:
            new_id, seq = self._new_id("invoice", invoice_id)
            self._invoices[new_id.lower()] = Invoice(scenario, born, new_id, seq, legacy)
        self._changed(new_id, 0)
        return new_id

    def create_batch(self, batch_id: str | None = None, scenario: str = "success") -> str:
        """Create an INVOICE batch, QUEUED now; return its id."""
        self._check_scenario(scenario, BATCH_OUTCOMES)
        born = self.clock.now()
        with self._lock:
            new_id, seq = self._new_id("batch", batch_id)
            self._batches[new_id.lower()] = Batch(scenario, born, new_id, seq)
        self._changed(new_id, 0)
        return new_id

    def invoices(self) -> list[dict[str, Any]]:
        """List invoices as ``{"id", "scenario", "legacy", "stage", "final_stage", "status", "type"}``."""
        result = []
        for invoice, stage in self.staged_invoices():
            body = self.bodies.invoice(invoice, stage)
            fields = {"legacy": invoice.legacy, "status": body["status"], "type": body["type"]}
            result.append(self._entry({"id": invoice.invoice_id}, invoice, stage, **fields))
        return result

    def batches(self) -> list[dict[str, Any]]:
        """List batches as ``{"id", "scenario", "stage", "final_stage", "status"}``."""
        return [
            self._entry({"id": batch.batch_id}, batch, stage, status=self.bodies.batch(batch, stage)["status"])
            for batch, stage in self._staged(lambda: sorted(self._batches.values(), key=lambda b: b.seq))
            if isinstance(batch, Batch)
        ]

    def staged_invoices(self) -> list[tuple[Invoice, int]]:
        """Every invoice (a copy) with its stage, all at one instant, in creation order."""
        staged = self._staged(lambda: sorted(self._invoices.values(), key=lambda i: i.seq))
        return [(item, stage) for item, stage in staged if isinstance(item, Invoice)]

    def invoice_body(self, invoice_id: str) -> dict[str, Any]:
        """The invoice ``data`` object exactly as ``GET .../invoices/{id}`` would give it now."""
        invoice = self._get_kind(Invoice, invoice_id)
        return self.bodies.invoice(invoice, self._stage(invoice))

    def case_body(self, invoice_id: str) -> dict[str, Any]:
        """The case of an invoice exactly as ``GET .../cases`` would list it now."""
        invoice = self._get_kind(Invoice, invoice_id)
        return self.bodies.case(invoice, self._stage(invoice))

    def batch_body(self, batch_id: str) -> dict[str, Any]:
        """The batch ``data`` object exactly as ``GET .../batches/{id}`` would give it now."""
        batch = self._get_kind(Batch, batch_id)
        return self.bodies.batch(batch, self._stage(batch))

    def is_batch(self, item_id: str) -> bool:
        """Whether ``item_id`` names a batch (else an invoice and its case)."""
        with self._lock:
            return isinstance(self._lookup(item_id), Batch)

    # ---- server hooks -----------------------------------------------------------

    def _register_api(self, router: Router) -> None:
        router.add("GET", "/orgs/{org_id}/invoices/{invoice_id}", self._http_get_invoice, label=NAME)
        InvoiceList(self).register(router)
        router.add("GET", "/orgs/{org_id}/cases", self._http_list_cases, label=NAME)
        router.add("GET", "/orgs/{org_id}/batches/{batch_id}", self._http_get_batch, label=NAME)

    def _admin_items(self) -> AdminItems:
        return {
            "invoices": (self.invoices, self._admin_create_invoice),
            "batches": (self.batches, self._admin_create_batch),
        }

    def _describe_header(self) -> list[str]:
        return [
            f"Amili Debt.Collection, org {self.org_id} ({self.stage_seconds:g} sim-seconds per stage):",
            self._token_line(),
            f"  list: GET /orgs/{self.org_id}/invoices?Status=&Type=&From=&To=&PageSize=&PageToken=",
        ]

    def env(self, base_url: str) -> dict[str, str]:
        """The token client's settings and the organisation."""
        return {**super().env(base_url), "POLLER_AMILI_COLLECTION__ORG_ID": self.org_id}

    # ---- HTTP handlers ----------------------------------------------------------

    def _http_get_invoice(self, request: Request, org_id: str, invoice_id: str) -> Response:
        return self._serve_item(request, org_id, invoice_id, Invoice)

    def _http_get_batch(self, request: Request, org_id: str, batch_id: str) -> Response:
        return self._serve_item(request, org_id, batch_id, Batch)

    def _http_list_cases(self, request: Request, org_id: str) -> Response:
        # Scope a fault to the listing with ref "cases".
        return self._serve(self.guard(request, org_id), "cases", lambda: self._answer_cases(request))

    def guard(self, request: Request, org_id: str) -> Response | None:
        """401 for a missing/invalid/expired token, 403 for another org; None when allowed."""
        authorization = request.header("Authorization")
        problem = self.token_service.problem(authorization)
        if problem is not None:
            return error_response(401, "Unauthorized", problem, challenge(authorization))
        if org_id.lower() != self.org_id.lower():
            return error_response(403, "Forbidden", f"The client has no access to organization {org_id}")
        return None

    def _serve_item(self, request: Request, org_id: str, raw_id: str, kind: type[Invoice | Batch]) -> Response:
        with self._lock:
            item = self._lookup(raw_id)
        item = item if isinstance(item, kind) else None
        # A fault armed for an item hits however its id is cased.
        ref = raw_id if item is None else (item.invoice_id if isinstance(item, Invoice) else item.batch_id)
        return self._serve(self.guard(request, org_id), ref, lambda: self._answer_item(raw_id, kind))

    def _answer_item(self, raw_id: str, kind: type[Invoice | Batch]) -> Response:
        with self._lock:
            item = self._lookup(raw_id)
        if isinstance(item, Invoice) and kind is Invoice:
            return _success(self.bodies.invoice(item, self._stage(item)))
        if isinstance(item, Batch) and kind is Batch:
            return _success(self.bodies.batch(item, self._stage(item)))
        return error_response(404, "NotFound", f"{kind.__name__} {raw_id} not found")

    def _answer_cases(self, request: Request) -> Response:
        try:
            query = CaseQuery.parse(request.query)
        except ValueError as exc:
            return error_response(400, "BadRequest", str(exc))
        matches: list[tuple[int, dict[str, Any]]] = []
        for invoice, stage in self.staged_invoices():
            if invoice.seq <= query.after:
                continue
            case = self.bodies.case(invoice, stage)
            if query.matches(case, self.bodies.debtor_name(invoice), self.clock.wall(invoice.born)):
                matches.append((invoice.seq, case))
        page = matches[: query.page_size]
        next_token = encode_cursor(page[-1][0]) if len(matches) > len(page) else None
        return _success([c for _, c in page], next_token, paged=True)

    # ---- admin handlers ---------------------------------------------------------

    def _admin_create_invoice(self, request: Request) -> Response:
        data = self._admin_fields(request, {"id", "scenario", "legacy"})
        legacy = data.get("legacy", False)
        if not isinstance(legacy, bool):
            raise HttpError(400, "legacy must be true or false")
        scenario = self._admin_text(data, "scenario", "paid")
        new_id = self._try_create(self.create_invoice, self._admin_text(data, "id"), scenario, legacy)
        return json_response(201, {"id": new_id})

    def _admin_create_batch(self, request: Request) -> Response:
        data = self._admin_fields(request, {"id", "scenario"})
        scenario = self._admin_text(data, "scenario", "success")
        new_id = self._try_create(self.create_batch, self._admin_text(data, "id"), scenario)
        return json_response(201, {"id": new_id})

    # ---- item lives -------------------------------------------------------------

    def _new_id(self, kind: str, wanted: str | None) -> tuple[str, int]:
        """Pick (or check) an id and the next creation sequence number; caller holds the lock."""
        seq = self._seq + 1
        taken = set(self._invoices) | set(self._batches)
        if wanted is None:
            new_id = str(uuid.uuid5(ID_NAMESPACE, f"{kind}/{seq}"))
        elif not isinstance(wanted, str) or not CUSTOM_ID.match(wanted):
            raise ValueError(f"id must be 1-64 letters, digits, '.', '_' or '-', got {wanted!r}")
        elif wanted.lower() in taken:
            raise ValueError(f"id {wanted} already exists")
        else:
            new_id = wanted
        self._seq = seq
        return new_id, seq

    def _lookup(self, item_id: Any) -> Invoice | Batch | None:
        # Ids are GUIDs in the real API, which .NET matches case-insensitively.
        key = str(item_id).lower()
        return self._invoices.get(key) or self._batches.get(key)

    def _get_kind(self, kind: type[Invoice] | type[Batch], item_id: str) -> Any:
        item = self._get(item_id)
        if not isinstance(item, kind):
            raise KeyError(f"{kind.__name__.lower()} {item_id} does not exist")
        return item

    def _final_stage(self, item: Invoice | Batch) -> int:
        return len(INVOICE_LIVES[item.scenario]) - 1 if isinstance(item, Invoice) else BATCH_FINAL_STAGE

    def _stage_what(self, item: Invoice | Batch) -> str:
        return item.invoice_id if isinstance(item, Invoice) else item.batch_id
