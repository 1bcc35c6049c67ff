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

import base64
import binascii
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from simulator.clock import SimClock, born_for_stage, next_stage_at, stage_reached
from simulator.faults import FaultPlan, render_fault
from simulator.identity import SharedTokenEndpoint, TokenService, bearer_token
from simulator.router import HttpError, Request, Response, Router, json_response

if TYPE_CHECKING:
    from simulator.server import SimulatorConfig

NAME = "amili_collection"
DEFAULT_CLIENT_ID = "sim-collection-client"
DEFAULT_CLIENT_SECRET = "sim-collection-secret"
#: The organization id of seed 001's example.
DEFAULT_ORG_ID = "497f6eca-6276-4993-bfeb-53cbbbba6f08"
RESOURCE = "https://api.amili.no/collection/v1"
CURRENCY = "NOK"
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100

PRINCIPAL = 1000
#: Fee claims in the order the notices add them: reminder fee, then collection fee.
FEES: tuple[tuple[str, int], ...] = (("REMINDER_FEE", 70), ("COLLECTION_FEE", 70))
PARTIAL_PAYMENT = 500


class _Step(NamedTuple):
    status: str
    type: str
    fees: int  # how many of FEES have been added as claims
    paid: int | None  # amount paid so far; None = everything owed


#: Each scenario's stages; the last one is final.
INVOICE_LIVES: dict[str, tuple[_Step, ...]] = {
    "paid": (
        _Step("OPEN", "NOTICE", 0, 0),
        _Step("OPEN", "PAYMENT_REMINDER", 1, 0),
        _Step("OPEN", "COLLECTION_NOTICE", 2, 0),
        _Step("OPEN", "COLLECTION_NOTICE", 2, PARTIAL_PAYMENT),
        _Step("CLOSED", "COLLECTION_NOTICE", 2, None),
    ),
    "paused": (
        _Step("OPEN", "NOTICE", 0, 0),
        _Step("OPEN", "PAYMENT_REMINDER", 1, 0),
        _Step("PAUSED", "PAYMENT_REMINDER", 1, 0),
    ),
    "withdrawn": (
        _Step("OPEN", "NOTICE", 0, 0),
        _Step("WITHDRAWN", "NOTICE", 0, 0),
    ),
}
CLOSED_STATUSES = frozenset({"CLOSED", "WITHDRAWN"})
#: The old Collection API capitalises words ("Open" in seed 001); AutoCollect uses upper case.
LEGACY_STATUS = {"OPEN": "Open", "CLOSED": "Closed", "PAUSED": "Paused", "WITHDRAWN": "Withdrawn"}

#: Terminal batch status per scenario; stages are QUEUED, PROCESSING, then this.
BATCH_OUTCOMES = {"success": "SUCCESS", "partial": "PARTIAL", "failed": "FAILED"}
BATCH_FINAL_STAGE = 2
BATCH_SIZE = 3
BATCH_ERRORS = (
    ("VALIDATION_ERROR", "debtors[0].addresses[0].zipCode is required"),
    ("VALIDATION_ERROR", "dueDate must not be before invoiceDate"),
    ("DUPLICATE", "uniqueSourceInvoiceId is already used by another invoice"),
)

DEBTORS = (("Ola", "Nordmann"), ("Kari", "Nordmann"), ("Per", "Hansen"), ("Ingrid", "Olsen"))

_ID_NAMESPACE = uuid.UUID("3b8f2d4e-9a61-5c07-8e2f-71d4a6c9b0e3")
_CUSTOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CURSOR = re.compile(r"^after:(\d+)$")


def amili_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z and whole seconds, like seed 001 (``2019-08-24T14:15:22Z``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def error_body(code: str, message: str) -> dict[str, Any]:
    """Amili's error envelope: ``{"summary": {"status": "ERROR"}, "errors": [{"code", "message"}]}``."""
    return {"summary": {"status": "ERROR"}, "errors": [{"code": code, "message": message}]}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """An Amili error body with the given HTTP status."""
    return json_response(status, error_body(code, message), headers)


def kid_mod10(digits: str) -> str:
    """Append the MOD10 (Luhn) check digit Norwegian KID/OCR references carry."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return digits + str((10 - total % 10) % 10)


def claims_for(step: _Step) -> list[dict[str, Any]]:
    """The claims of an invoice at ``step``; payments cover fees before the principal."""
    parts = [("PRINCIPAL", PRINCIPAL), *FEES[: step.fees]]
    left = sum(amount for _, amount in parts) if step.paid is None else step.paid
    paid: dict[str, int] = {}
    # Norwegian order of coverage: costs first, the principal last.
    for kind, amount in reversed(parts):
        paid[kind] = min(amount, left)
        left -= paid[kind]
    return [
        {
            "type": kind,
            "originalAmount": amount,
            "currentAmount": amount - paid[kind],
            "paidAmount": paid[kind],
            "currency": CURRENCY,
        }
        for kind, amount in parts
    ]


@dataclass
class _Invoice:
    invoice_id: str
    seq: int
    scenario: str
    legacy: bool
    # Simulated instant the item was at stage 0; stage k starts at born + k * stage_seconds.
    born: float


@dataclass
class _Batch:
    batch_id: str
    seq: int
    scenario: str
    born: float


class AmiliCollectionProvider:
    """The fake Debt.Collection API plus its Python and admin controls."""

    name = NAME

    def __init__(
        self,
        clock: SimClock,
        faults: FaultPlan,
        config: SimulatorConfig,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        options = config.options
        self.clock = clock
        self.faults = faults
        self.stage_seconds = float(config.stage_seconds)
        self.client_id = str(options.get("amili_collection_client_id", DEFAULT_CLIENT_ID))
        self.client_secret = str(options.get("amili_collection_client_secret", DEFAULT_CLIENT_SECRET))
        self.org_id = str(options.get("amili_collection_org_id", DEFAULT_ORG_ID))
        self.token_service = TokenService(
            {self.client_id: self.client_secret}, config.token_ttl_seconds, resource=RESOURCE
        )
        self._wait = wait
        self._lock = threading.Lock()
        self._invoices: dict[str, _Invoice] = {}
        self._batches: dict[str, _Batch] = {}
        self._seq = 0
        #: Told of each invoice or batch created (with its first stage) or moved (simulator.pushes).
        self.on_change: Callable[[str, int | None], None] | None = None
        seed = int(options.get("amili_collection_seed", 2))
        if seed < 0:
            raise ValueError(f"amili_collection_seed must be >= 0, got {seed}")
        for index in range(seed):
            # Alternate spellings so the demo shows both API generations.
            self.create_invoice(legacy=index % 2 == 1)
        if seed:
            self.create_batch()

    # ---- Python API -------------------------------------------------------------

    @property
    def tokens_issued(self) -> int:
        """How many access tokens this provider's clients have obtained."""
        return self.token_service.issued

    def expire_tokens(self) -> int:
        """Expire every token issued so far (next API call with one gets 401); return how many."""
        return self.token_service.expire_all()

    def create_invoice(self, invoice_id: str | None = None, scenario: str = "paid", legacy: bool = False) -> str:
        """Create an invoice (and its case) at stage 0 now; return its id (uuid-like when auto)."""
        if scenario not in INVOICE_LIVES:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(INVOICE_LIVES)}")
        if not isinstance(legacy, bool):
            raise ValueError(f"legacy must be true or false, got {legacy!r}")
        born = self.clock.now()
        with self._lock:
            new_id, seq = self._new_id("invoice", invoice_id)
            self._invoices[new_id.lower()] = _Invoice(new_id, seq, scenario, legacy, born)
        if self.on_change is not None:
            self.on_change(new_id, 0)
        return new_id

    def create_batch(self, batch_id: str | None = None, scenario: str = "success") -> str:
        """Create an INVOICE batch, QUEUED now; return its id."""
        if scenario not in BATCH_OUTCOMES:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(BATCH_OUTCOMES)}")
        born = self.clock.now()
        with self._lock:
            new_id, seq = self._new_id("batch", batch_id)
            self._batches[new_id.lower()] = _Batch(new_id, seq, scenario, born)
        if self.on_change is not None:
            self.on_change(new_id, 0)
        return new_id

    def invoices(self) -> list[dict[str, Any]]:
        """List invoices as ``{"id", "scenario", "legacy", "stage", "final_stage", "status", "type"}``."""
        now = self.clock.now()
        with self._lock:
            snapshot = sorted(self._invoices.values(), key=lambda i: i.seq)
        result = []
        for invoice in snapshot:
            stage = self._stage(invoice.born, len(INVOICE_LIVES[invoice.scenario]) - 1, now)
            body = self._render_invoice(invoice, stage)
            result.append(
                {
                    "id": invoice.invoice_id,
                    "scenario": invoice.scenario,
                    "legacy": invoice.legacy,
                    "stage": stage,
                    "final_stage": len(INVOICE_LIVES[invoice.scenario]) - 1,
                    "status": body["status"],
                    "type": body["type"],
                }
            )
        return result

    def batches(self) -> list[dict[str, Any]]:
        """List batches as ``{"id", "scenario", "stage", "final_stage", "status"}``."""
        now = self.clock.now()
        with self._lock:
            snapshot = sorted(self._batches.values(), key=lambda b: b.seq)
        result = []
        for batch in snapshot:
            stage = self._stage(batch.born, BATCH_FINAL_STAGE, now)
            result.append(
                {
                    "id": batch.batch_id,
                    "scenario": batch.scenario,
                    "stage": stage,
                    "final_stage": BATCH_FINAL_STAGE,
                    "status": self._render_batch(batch, stage)["status"],
                }
            )
        return result

    def invoice_body(self, invoice_id: str) -> dict[str, Any]:
        """The invoice ``data`` object exactly as ``GET .../invoices/{id}`` would give it now."""
        invoice = self._get_invoice(invoice_id)
        return self._render_invoice(invoice, self._invoice_stage(invoice))

    def case_body(self, invoice_id: str) -> dict[str, Any]:
        """The case of an invoice exactly as ``GET .../cases`` would list it now."""
        invoice = self._get_invoice(invoice_id)
        return self._render_case(invoice, self._invoice_stage(invoice))

    def batch_body(self, batch_id: str) -> dict[str, Any]:
        """The batch ``data`` object exactly as ``GET .../batches/{id}`` would give it now."""
        batch = self._get_batch(batch_id)
        return self._render_batch(batch, self._stage(batch.born, BATCH_FINAL_STAGE, self.clock.now()))

    def stage_of(self, item_id: str) -> int:
        """The stage an invoice or batch is at now."""
        born, final = self._born_and_final(item_id)
        return self._stage(born, final, self.clock.now())

    def set_stage(self, item_id: str, stage: int) -> None:
        """Jump an invoice or batch to ``stage`` now; it keeps moving on from there."""
        _, final = self._born_and_final(item_id)
        born = born_for_stage(stage, final, self.clock.now(), self.stage_seconds, item_id)
        with self._lock:
            item = self._find(self._invoices, item_id) or self._find(self._batches, item_id)
            if item is None:
                raise KeyError(f"no invoice or batch {item_id}")
            item.born = born
        if self.on_change is not None:
            self.on_change(item_id, None)

    def next_change_at(self, item_id: str) -> float | None:
        """When an invoice or batch next moves on (simulated seconds; None once final)."""
        born, final = self._born_and_final(item_id)
        return next_stage_at(born, self.clock.now(), self.stage_seconds, final)

    def is_batch(self, item_id: str) -> bool:
        """Whether ``item_id`` names a batch (else an invoice and its case)."""
        with self._lock:
            return self._find(self._batches, item_id) is not None

    # ---- server hooks -----------------------------------------------------------

    def register(self, router: Router) -> None:
        """Add the API routes, the shared ``POST /token`` and the ``/_sim/amili_collection/...`` routes."""
        SharedTokenEndpoint.register(router, NAME, self.token_service, self.faults, self._wait)
        router.add("GET", "/orgs/{org_id}/invoices/{invoice_id}", self._http_get_invoice, label=NAME)
        # GET /orgs/{orgId}/invoices; imported here because simulator.amili_collection_list imports this module.
        from simulator.amili_collection_list import InvoiceList

        InvoiceList(self).register(router)
        router.add("GET", "/orgs/{org_id}/cases", self._http_list_cases, label=NAME)
        router.add("GET", "/orgs/{org_id}/batches/{batch_id}", self._http_get_batch, label=NAME)
        admin = f"/_sim/{NAME}"
        router.add("GET", f"{admin}/invoices", self._admin_list_invoices, label="_sim")
        router.add("POST", f"{admin}/invoices", self._admin_create_invoice, label="_sim")
        router.add("POST", f"{admin}/invoices/{{item_id}}/stage", self._admin_set_stage, label="_sim")
        router.add("GET", f"{admin}/batches", self._admin_list_batches, label="_sim")
        router.add("POST", f"{admin}/batches", self._admin_create_batch, label="_sim")
        router.add("POST", f"{admin}/batches/{{item_id}}/stage", self._admin_set_stage, label="_sim")
        router.add("GET", f"{admin}/tokens", self._admin_tokens, label="_sim")
        router.add("POST", f"{admin}/tokens/expire", self._admin_expire_tokens, label="_sim")

    def describe_lines(self) -> list[str]:
        """Human lines: token client, invoices and batches and where they are in their life."""
        lines = [
            f"Amili Debt.Collection, org {self.org_id} ({self.stage_seconds:g} sim-seconds per stage):",
            f"  token: POST /token client_id={self.client_id} ({self.tokens_issued} issued)",
            f"  list: GET /orgs/{self.org_id}/invoices?Status=&Type=&From=&To=&PageSize=&PageToken=",
        ]
        header = len(lines)
        for info in self.invoices():
            spelling = " legacy" if info["legacy"] else ""
            lines.append(
                f"  invoice {info['id']}  scenario={info['scenario']}{spelling}"
                f"  stage {info['stage']}/{info['final_stage']}  status={info['status']} type={info['type']}"
            )
        for info in self.batches():
            lines.append(
                f"  batch {info['id']}  scenario={info['scenario']}"
                f"  stage {info['stage']}/{info['final_stage']}  status={info['status']}"
            )
        if len(lines) == header:
            lines.append(f"  (no invoices yet; POST /_sim/{NAME}/invoices to add one)")
        return lines

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake (the token URL is ``{AUTH_URL}/token``)."""
        return {
            "POLLER_AMILI_COLLECTION__BASE_URL": base_url,
            "POLLER_AMILI_COLLECTION__AUTH_URL": base_url,
            "POLLER_AMILI_COLLECTION__CLIENT_ID": self.client_id,
            "POLLER_AMILI_COLLECTION__CLIENT_SECRET": self.client_secret,
            "POLLER_AMILI_COLLECTION__ORG_ID": self.org_id,
        }

    # ---- HTTP handlers ----------------------------------------------------------

    def _http_get_invoice(self, request: Request, org_id: str, invoice_id: str) -> Response:
        denied = self._guard(request, org_id)
        if denied is not None:
            return denied
        invoice = self._find(self._invoices, invoice_id)
        ref = invoice.invoice_id if invoice is not None else invoice_id
        return self._with_faults(ref, lambda: self._answer_invoice(invoice_id))

    def _http_list_cases(self, request: Request, org_id: str) -> Response:
        denied = self._guard(request, org_id)
        if denied is not None:
            return denied
        # Scope a fault to the listing with ref "cases".
        return self._with_faults("cases", lambda: self._answer_cases(request))

    def _http_get_batch(self, request: Request, org_id: str, batch_id: str) -> Response:
        denied = self._guard(request, org_id)
        if denied is not None:
            return denied
        batch = self._find(self._batches, batch_id)
        ref = batch.batch_id if batch is not None else batch_id
        return self._with_faults(ref, lambda: self._answer_batch(batch_id))

    def _guard(self, request: Request, org_id: str) -> Response | None:
        """401 for a missing/invalid/expired token, 403 for another org; None when allowed."""
        authorization = request.header("Authorization")
        problem = self.token_service.problem(authorization)
        if problem is not None:
            # RFC 6750 section 3: name the error only when a token was presented.
            challenge = 'Bearer error="invalid_token"' if bearer_token(authorization) else "Bearer"
            return error_response(401, "Unauthorized", problem, {"WWW-Authenticate": challenge})
        if org_id.lower() != self.org_id.lower():
            return error_response(403, "Forbidden", f"The client has no access to organization {org_id}")
        return None

    def _with_faults(self, ref: str, answer: Callable[[], Response]) -> Response:
        fault = self.faults.take(NAME, ref)
        if fault is not None:
            faulted = render_fault(fault, normal=answer, error=self._fault_error, wait=self._wait)
            if faulted is not None:
                return faulted
        return answer()

    def _answer_invoice(self, raw_id: str) -> Response:
        invoice = self._find(self._invoices, raw_id)
        if invoice is None:
            return error_response(404, "NotFound", f"Invoice {raw_id} not found")
        body = self._render_invoice(invoice, self._invoice_stage(invoice))
        return json_response(200, {"summary": {"status": "SUCCESS"}, "data": body})

    def _answer_batch(self, raw_id: str) -> Response:
        batch = self._find(self._batches, raw_id)
        if batch is None:
            return error_response(404, "NotFound", f"Batch {raw_id} not found")
        body = self._render_batch(batch, self._stage(batch.born, BATCH_FINAL_STAGE, self.clock.now()))
        return json_response(200, {"summary": {"status": "SUCCESS"}, "data": body})

    def _answer_cases(self, request: Request) -> Response:
        try:
            query = _CaseQuery.parse(request.query)
        except ValueError as exc:
            return error_response(400, "BadRequest", str(exc))
        now = self.clock.now()
        with self._lock:
            snapshot = sorted(self._invoices.values(), key=lambda i: i.seq)
        matches: list[tuple[int, dict[str, Any]]] = []
        for invoice in snapshot:
            if invoice.seq <= query.after:
                continue
            stage = self._stage(invoice.born, len(INVOICE_LIVES[invoice.scenario]) - 1, now)
            case = self._render_case(invoice, stage)
            if query.matches(case, self._debtor_name(invoice), self.clock.wall(invoice.born)):
                matches.append((invoice.seq, case))
        page = matches[: query.page_size]
        next_token = _encode_cursor(page[-1][0]) if len(matches) > len(page) else None
        return json_response(
            200, {"summary": {"status": "SUCCESS", "nextPageToken": next_token}, "data": [c for _, c in page]}
        )

    @staticmethod
    def _fault_error(status: int) -> Response:
        if status == 401:
            return error_response(401, "Unauthorized", "The access token is not valid")
        if status == 404:
            return error_response(404, "NotFound", "Resource not found")
        if status == 429:
            return error_response(429, "TooManyRequests", "Too many requests, retry later")
        return error_response(status, "InternalServerError", "Unexpected error")

    # ---- admin handlers ---------------------------------------------------------

    def _admin_list_invoices(self, request: Request) -> Response:
        return json_response(200, {"invoices": self.invoices()})

    def _admin_list_batches(self, request: Request) -> Response:
        return json_response(200, {"batches": self.batches()})

    def _admin_create_invoice(self, request: Request) -> Response:
        data = _admin_fields(request, {"id", "scenario", "legacy"})
        legacy = data.get("legacy", False)
        if not isinstance(legacy, bool):
            raise HttpError(400, "legacy must be true or false")
        try:
            new_id = self.create_invoice(_admin_id(data), _admin_scenario(data, "paid"), legacy)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(201, {"id": new_id})

    def _admin_create_batch(self, request: Request) -> Response:
        data = _admin_fields(request, {"id", "scenario"})
        try:
            new_id = self.create_batch(_admin_id(data), _admin_scenario(data, "success"))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(201, {"id": new_id})

    def _admin_set_stage(self, request: Request, item_id: str) -> Response:
        data = _admin_fields(request, {"stage"})
        try:
            self.set_stage(item_id, data.get("stage"))  # type: ignore[arg-type]
        except KeyError as exc:
            raise HttpError(404, str(exc.args[0])) from exc
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(200, {"id": item_id, "stage": self.stage_of(item_id)})

    def _admin_tokens(self, request: Request) -> Response:
        return json_response(200, {"tokens_issued": self.tokens_issued, "active": self.token_service.active()})

    def _admin_expire_tokens(self, request: Request) -> Response:
        return json_response(200, {"expired": self.expire_tokens(), "tokens_issued": self.tokens_issued})

    # ---- item lives -------------------------------------------------------------

    def _new_id(self, kind: str, wanted: str | None) -> tuple[str, int]:
        """Pick (or check) an id and the next creation sequence number; caller holds the lock."""
        seq = self._seq + 1
        taken = set(self._invoices) | set(self._batches)
        if wanted is None:
            new_id = str(uuid.uuid5(_ID_NAMESPACE, f"{kind}/{seq}"))
        elif not isinstance(wanted, str) or not _CUSTOM_ID.match(wanted):
            raise ValueError(f"id must be 1-64 letters, digits, '.', '_' or '-', got {wanted!r}")
        elif wanted.lower() in taken:
            raise ValueError(f"id {wanted} already exists")
        else:
            new_id = wanted
        self._seq = seq
        return new_id, seq

    @staticmethod
    def _find(items: dict[str, Any], raw_id: str) -> Any:
        # Ids are GUIDs in the real API, which .NET matches case-insensitively.
        return items.get(raw_id.lower())

    def _get_invoice(self, invoice_id: str) -> _Invoice:
        with self._lock:
            invoice = self._find(self._invoices, invoice_id)
        if invoice is None:
            raise KeyError(f"invoice {invoice_id} does not exist")
        return invoice  # type: ignore[no-any-return]

    def _get_batch(self, batch_id: str) -> _Batch:
        with self._lock:
            batch = self._find(self._batches, batch_id)
        if batch is None:
            raise KeyError(f"batch {batch_id} does not exist")
        return batch  # type: ignore[no-any-return]

    def _born_and_final(self, item_id: str) -> tuple[float, int]:
        with self._lock:
            invoice = self._find(self._invoices, item_id)
            batch = self._find(self._batches, item_id)
        if invoice is not None:
            return invoice.born, len(INVOICE_LIVES[invoice.scenario]) - 1
        if batch is not None:
            return batch.born, BATCH_FINAL_STAGE
        raise KeyError(f"no invoice or batch {item_id}")

    def _invoice_stage(self, invoice: _Invoice) -> int:
        return self._stage(invoice.born, len(INVOICE_LIVES[invoice.scenario]) - 1, self.clock.now())

    def _stage(self, born: float, final: int, now: float) -> int:
        return stage_reached(born, now, self.stage_seconds, final)

    def _stamp(self, born: float, stage: int) -> str:
        return amili_timestamp(self.clock.wall(born + stage * self.stage_seconds))

    def _debtor_name(self, invoice: _Invoice) -> str:
        first, last = DEBTORS[(invoice.seq - 1) % len(DEBTORS)]
        return f"{first} {last}"

    def _customer_number(self, invoice: _Invoice) -> str:
        # Seed 003 uses customer number 543210; number ours from there.
        return str(543209 + invoice.seq)

    def _render_invoice(self, invoice: _Invoice, stage: int) -> dict[str, Any]:
        """Build the invoice ``data`` object, with exactly seed 001's fields, at ``stage``."""
        life = INVOICE_LIVES[invoice.scenario]
        step = life[stage]
        claims = claims_for(step)
        closed_at = None
        if step.status in CLOSED_STATUSES:
            first_closed = next(k for k, s in enumerate(life) if s.status in CLOSED_STATUSES)
            closed_at = self._stamp(invoice.born, first_closed)
        created = self.clock.wall(invoice.born)
        invoice_date = created.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
        first, last = DEBTORS[(invoice.seq - 1) % len(DEBTORS)]
        seq = invoice.seq
        birth_year, birth_day = 1970 + seq % 30, seq % 28 + 1
        return {
            "id": invoice.invoice_id,
            "organization": {
                "id": self.org_id,
                "organizationNumber": "999888777",
                "name": "Simulert Kreditor AS",
            },
            "invoiceNumber": str(100000 + seq),
            "collectionCaseNumber": str(7000000 + seq),
            "type": step.type,
            "status": LEGACY_STATUS[step.status] if invoice.legacy else step.status,
            "createdAt": amili_timestamp(created),
            "closedAt": closed_at,
            "originalInvoiceAmount": PRINCIPAL,
            "currency": CURRENCY,
            "invoiceDate": amili_timestamp(invoice_date),
            "dueDate": amili_timestamp(invoice_date + timedelta(days=14)),
            "ocrReferenceNumber": kid_mod10(f"{self._customer_number(invoice)}{100000 + seq}"),
            "uniqueSourceInvoiceId": f"sim-src-{seq:05d}",
            "currentAmount": sum(c["currentAmount"] for c in claims),
            "paidAmount": sum(c["paidAmount"] for c in claims),
            "claims": claims,
            "debtors": [
                {
                    "type": "Private",
                    "firstname": first,
                    "lastname": last,
                    "name": f"{first} {last}",
                    "customerNumber": self._customer_number(invoice),
                    # Shaped like a Norwegian national id (DDMMYY + 5 digits), not a valid one.
                    "identificationNumber": f"{birth_day:02d}01{birth_year % 100:02d}{seq * 7919 % 100000:05d}",
                    "organizationNumber": None,
                    "dateOfBirth": f"{birth_year}-01-{birth_day:02d}",
                    "emails": [{"value": f"{first.lower()}.{last.lower()}@example.no"}],
                    "phoneNumbers": [],
                    "addresses": [
                        {"street": f"Storgata {seq}", "city": "Oslo", "zipCode": "0155", "countryCode": "NO"}
                    ],
                }
            ],
        }

    def _render_case(self, invoice: _Invoice, stage: int) -> dict[str, Any]:
        """The collection-case view of an invoice at ``stage``: same life, case fields."""
        body = self._render_invoice(invoice, stage)
        return {
            "id": str(uuid.uuid5(_ID_NAMESPACE, f"case/{invoice.invoice_id}")),
            "caseNumber": body["collectionCaseNumber"],
            "organizationId": self.org_id,
            "status": body["status"],
            "type": body["type"],
            "createdAt": body["createdAt"],
            "closedAt": body["closedAt"],
            "originalAmount": body["originalInvoiceAmount"],
            "currentAmount": body["currentAmount"],
            "paidAmount": body["paidAmount"],
            "currency": body["currency"],
            "invoiceNumber": body["invoiceNumber"],
            "uniqueSourceInvoiceId": body["uniqueSourceInvoiceId"],
            "customerNumber": self._customer_number(invoice),
        }

    def _render_batch(self, batch: _Batch, stage: int) -> dict[str, Any]:
        """Build the batch ``data`` object at ``stage`` (QUEUED, PROCESSING, terminal)."""
        succeeded: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        if stage >= BATCH_FINAL_STAGE:
            status = BATCH_OUTCOMES[batch.scenario]
            failing = {"success": 0, "partial": 1, "failed": BATCH_SIZE}[batch.scenario]
            for k in range(BATCH_SIZE):
                if k >= BATCH_SIZE - failing:
                    code, message = BATCH_ERRORS[k % len(BATCH_ERRORS)]
                    failed.append(
                        {"reference": f"sim-batch-{batch.seq}-{k + 1}", "errors": [{"code": code, "message": message}]}
                    )
                else:
                    # Entry fields as in the GetBatchById example (invoiceId, invoiceNumber, caseId).
                    succeeded.append(
                        {
                            "invoiceId": str(uuid.uuid5(_ID_NAMESPACE, f"batch/{batch.batch_id}/invoice/{k}")),
                            "invoiceNumber": f"B{batch.seq:04d}-{k + 1}",
                            "caseId": str(uuid.uuid5(_ID_NAMESPACE, f"batch/{batch.batch_id}/case/{k}")),
                        }
                    )
        else:
            status = "QUEUED" if stage == 0 else "PROCESSING"
        return {
            "batchId": batch.batch_id,
            "type": "INVOICE",
            "status": status,
            "createdAt": self._stamp(batch.born, 0),
            "finishedAt": self._stamp(batch.born, BATCH_FINAL_STAGE) if stage >= BATCH_FINAL_STAGE else None,
            "organizationId": self.org_id,
            # The docs show a GUID here: the API client that posted the batch.
            "createdBy": str(uuid.uuid5(_ID_NAMESPACE, f"client/{self.client_id}")),
            "succeeded": succeeded,
            "failed": failed,
        }


@dataclass(frozen=True)
class _CaseQuery:
    """The parsed query of ``GET /orgs/{orgId}/cases``."""

    statuses: frozenset[str]
    types: frozenset[str]
    case_number: str | None
    customer_number: str | None
    source_id: str | None
    search: str | None
    created_from: datetime | None
    created_before: datetime | None  # exclusive
    after: int
    page_size: int

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> _CaseQuery:
        """Read the documented parameters (names case-insensitive, as ASP.NET binds them).

        Raises:
            ValueError: a malformed date, page size or page token.
        """
        params: dict[str, list[str]] = {}
        for key, values in query.items():
            params.setdefault(key.lower(), []).extend(values)

        def one(name: str) -> str | None:
            values = [v for v in params.get(name.lower(), []) if v != ""]
            return values[0] if values else None

        def many(name: str) -> frozenset[str]:
            # Status=OPEN&Status=PAUSED and Status=OPEN,PAUSED both mean either.
            return frozenset(
                part.strip().upper() for v in params.get(name.lower(), []) for part in v.split(",") if part.strip()
            )

        raw_size = one("PageSize")
        if raw_size is None:
            page_size = DEFAULT_PAGE_SIZE
        elif not raw_size.isdigit() or not 1 <= int(raw_size) <= MAX_PAGE_SIZE:
            raise ValueError(f"PageSize must be an integer 1..{MAX_PAGE_SIZE}, got {raw_size!r}")
        else:
            page_size = int(raw_size)
        raw_to = one("ToCreatedAt")
        created_before = None
        if raw_to is not None:
            created_before = _parse_instant("ToCreatedAt", raw_to)
            # A bare date means "up to and including that day"; a datetime is inclusive to the second.
            created_before += timedelta(days=1) if len(raw_to) == 10 else timedelta(seconds=1)
        raw_from = one("FromCreatedAt")
        token = one("PageToken")
        search = one("SearchTerm")
        return cls(
            statuses=many("Status"),
            types=many("Type"),
            case_number=one("CaseNumber"),
            customer_number=one("CustomerNumber"),
            source_id=one("UniqueSourceInvoiceId"),
            search=search.lower() if search else None,
            created_from=_parse_instant("FromCreatedAt", raw_from) if raw_from is not None else None,
            created_before=created_before,
            after=_decode_cursor(token) if token is not None else 0,
            page_size=page_size,
        )

    def matches(self, case: dict[str, Any], debtor_name: str, created: datetime) -> bool:
        """True when ``case`` passes every given filter."""
        if self.statuses and case["status"].upper() not in self.statuses:
            return False
        if self.types and case["type"].upper() not in self.types:
            return False
        if self.case_number is not None and case["caseNumber"] != self.case_number:
            return False
        if self.customer_number is not None and case["customerNumber"] != self.customer_number:
            return False
        if self.source_id is not None and case["uniqueSourceInvoiceId"] != self.source_id:
            return False
        if self.search is not None:
            haystack = " ".join(
                [
                    case["caseNumber"],
                    case["invoiceNumber"],
                    case["uniqueSourceInvoiceId"],
                    case["customerNumber"],
                    debtor_name,
                ]
            ).lower()
            if self.search not in haystack:
                return False
        created = created.replace(microsecond=0)
        if self.created_from is not None and created < self.created_from:
            return False
        return not (self.created_before is not None and created >= self.created_before)


def _parse_instant(name: str, text: str) -> datetime:
    """Parse an ISO 8601 date or datetime to naive UTC (the SimClock's wall clock is UTC)."""
    try:
        # An unescaped "+" of a zone offset arrives as a space after query decoding.
        moment = datetime.fromisoformat(re.sub(r" (\d{2}:?\d{2})$", r"+\1", text))
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date or date-time, got {text!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    match = _CURSOR.match(text)
    if match is None:
        raise ValueError(f"PageToken {token!r} is not valid")
    return int(match.group(1))


def _admin_fields(request: Request, allowed: set[str]) -> dict[str, Any]:
    data = request.json_object()
    unknown = set(data) - allowed
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    return data


def _admin_id(data: dict[str, Any]) -> str | None:
    value = data.get("id")
    if value is not None and not isinstance(value, str):
        raise HttpError(400, "id must be a string")
    return value


def _admin_scenario(data: dict[str, Any], default: str) -> str:
    scenario = data.get("scenario", default)
    if not isinstance(scenario, str):
        raise HttpError(400, "scenario must be a string")
    return scenario
