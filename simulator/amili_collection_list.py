"""Fake of Amili Norway's organisation invoice list, ``GET /orgs/{orgId}/invoices``.

"Get organization invoices" (GetInvoicesByOrganization), PROVIDERS.md section 2: the old Collection
API (https://docs.amili.dev/getinvoicesbyorganization-3939018e0) and the AutoCollect API
(https://docs.amili.dev/getinvoicesbyorganization-4148068e0). Kept apart from
simulator.amili_collection, which serves the same invoices one at a time: each element of ``data``
is exactly the ``data`` that ``GET /orgs/{orgId}/invoices/{invoiceId}`` gives at that instant, built
by the same rendering function.

- Envelope: ``{"summary": {"status": "SUCCESS", "nextPageToken": <token or null>}, "data": [...]}``;
  ``nextPageToken`` is null on the last page.
- Query (names bind case-insensitively, as ASP.NET binds them; empty values are ignored):
  ``Status`` and ``Type`` match case-insensitively, so ``OPEN`` and ``Open`` find both spellings,
  and take several values (``Status=OPEN,PAUSED`` or ``Status=OPEN&Status=PAUSED``);
  ``InvoiceNumber``, ``UniqueSourceInvoiceId`` and ``CustomerNumber`` (any debtor's) match
  exactly; ``From`` / ``To`` bound ``createdAt``, both inclusive: an ISO 8601 date (``To`` then
  covers that whole day, UTC) or date-time (zone-less means UTC); ``PageSize`` defaults to 25 and
  is clamped to 100; ``PageToken`` is a ``nextPageToken``.
- Order: ``createdAt``, then ``id``, ascending. The cursor is keyset: an opaque base64url string of
  the page number it opens and the (createdAt, id) of the last invoice sent, so an invoice created
  while a client pages never shifts the pages it has not read yet.
- Errors: a malformed ``From``, ``To``, ``PageSize`` (not a positive integer) or ``PageToken`` gets
  400 ``BadRequest`` in Amili's error envelope, naming the parameter; tokens and other orgs get the
  401/403 of the item routes.
- Faults: an unscoped amili_collection fault hits list requests too; ``ref: "list"`` hits only list
  requests, and ``ref: "list:<n>"`` only page n (``list:1`` is the first page, asked without a
  PageToken), so a test can fail page 2 before the client starts.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from simulator.amili_collection import (
    _CUSTOM_ID,
    DEFAULT_PAGE_SIZE,
    INVOICE_LIVES,
    MAX_PAGE_SIZE,
    NAME,
    _parse_instant,
    error_response,
)
from simulator.faults import Fault, render_fault
from simulator.router import Request, Response, Router, json_response

if TYPE_CHECKING:
    from simulator.amili_collection import AmiliCollectionProvider

LIST_FAULT_REF = "list"
#: The timestamp format of ``createdAt`` (amili_collection.amili_timestamp).
_STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TOKEN_TEXT = re.compile(r"invoices:(\d{1,9}):(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)/(.+)")

#: The sort and cursor key of an invoice body: (createdAt, id).
OrderKey = tuple[str, str]


def order_key(body: dict[str, Any]) -> OrderKey:
    """Where a rendered invoice sits in the list: by ``createdAt``, then ``id``."""
    # createdAt has one fixed width format, so comparing the strings compares the instants.
    return body["createdAt"], body["id"]


@dataclass(frozen=True)
class Cursor:
    """What a PageToken carries: the page it opens and the key of the last invoice already sent."""

    page: int
    after: OrderKey

    def encode(self) -> str:
        """The opaque token (base64url without padding)."""
        text = f"invoices:{self.page}:{self.after[0]}/{self.after[1]}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Read a token made by ``encode``.

        Raises:
            ValueError: anything else, e.g. a token of the cases list.
        """
        invalid = ValueError(f"PageToken {token!r} is not valid; pass summary.nextPageToken of the previous page")
        try:
            # validate=True: the lenient default would drop stray characters and accept garbage.
            text = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise invalid from None
        match = _TOKEN_TEXT.fullmatch(text)
        if match is None or int(match.group(1)) < 2 or not _CUSTOM_ID.match(match.group(3)):
            raise invalid
        try:
            datetime.strptime(match.group(2), _STAMP_FORMAT)
        except ValueError:
            raise invalid from None
        return cls(int(match.group(1)), (match.group(2), match.group(3)))


def _params(query: dict[str, list[str]]) -> dict[str, list[str]]:
    """Query parameters by lower-cased name."""
    params: dict[str, list[str]] = {}
    for key, values in query.items():
        params.setdefault(key.lower(), []).extend(values)
    return params


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = [v for v in params.get(name.lower(), []) if v != ""]
    return values[0] if values else None


def _many(params: dict[str, list[str]], name: str) -> frozenset[str]:
    return frozenset(
        part.strip().upper() for v in params.get(name.lower(), []) for part in v.split(",") if part.strip()
    )


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ValueError(f"PageSize must be a positive integer (at most {MAX_PAGE_SIZE} are sent), got {raw!r}")
    return min(int(raw), MAX_PAGE_SIZE)


def _created_before(raw: str) -> datetime:
    """The exclusive upper bound that makes ``To=raw`` inclusive."""
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        # createdAt has microsecond 0, and created <= t exactly when created < t + 1 microsecond.
        return _parse_instant("To", raw) + timedelta(microseconds=1)
    return datetime(day.year, day.month, day.day) + timedelta(days=1)


@dataclass(frozen=True)
class InvoiceQuery:
    """The parsed query of one ``GET /orgs/{orgId}/invoices`` request."""

    statuses: frozenset[str]
    types: frozenset[str]
    invoice_number: str | None
    source_id: str | None
    customer_number: str | None
    created_from: datetime | None
    created_before: datetime | None  # exclusive
    cursor: Cursor | None
    page_size: int

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> InvoiceQuery:
        """Read the documented parameters plus PageSize.

        Raises:
            ValueError: a malformed From, To, PageSize or PageToken; the message names it.
        """
        params = _params(query)
        raw_from, raw_to, token = _one(params, "From"), _one(params, "To"), _one(params, "PageToken")
        return cls(
            statuses=_many(params, "Status"),
            types=_many(params, "Type"),
            invoice_number=_one(params, "InvoiceNumber"),
            source_id=_one(params, "UniqueSourceInvoiceId"),
            customer_number=_one(params, "CustomerNumber"),
            created_from=None if raw_from is None else _parse_instant("From", raw_from),
            created_before=None if raw_to is None else _created_before(raw_to),
            cursor=None if token is None else Cursor.decode(token),
            page_size=_page_size(_one(params, "PageSize")),
        )

    @property
    def page(self) -> int:
        """The page number this request asks for (1 without a PageToken)."""
        return 1 if self.cursor is None else self.cursor.page

    def matches(self, body: dict[str, Any]) -> bool:
        """True when the rendered invoice ``body`` passes every given filter."""
        if self.statuses and body["status"].upper() not in self.statuses:
            return False
        if self.types and body["type"].upper() not in self.types:
            return False
        if self.invoice_number is not None and body["invoiceNumber"] != self.invoice_number:
            return False
        if self.source_id is not None and body["uniqueSourceInvoiceId"] != self.source_id:
            return False
        if self.customer_number is not None and all(
            d["customerNumber"] != self.customer_number for d in body["debtors"]
        ):
            return False
        created = datetime.strptime(body["createdAt"], _STAMP_FORMAT)
        if self.created_from is not None and created < self.created_from:
            return False
        return not (self.created_before is not None and created >= self.created_before)


class InvoiceList:
    """``GET /orgs/{orgId}/invoices`` over one AmiliCollectionProvider's invoices, auth and faults."""

    def __init__(self, provider: AmiliCollectionProvider) -> None:
        self.provider = provider
        # Serialises "is a page-scoped fault armed?" with taking it (FaultPlan.take would otherwise
        # fall back to an unscoped fault if another request took the scoped one in between).
        self._fault_lock = threading.Lock()

    def register(self, router: Router) -> None:
        """Add the list route, counted under the amili_collection label like the item routes."""
        router.add("GET", "/orgs/{org_id}/invoices", self.handle, label=NAME)

    def handle(self, request: Request, org_id: str) -> Response:
        """Authenticate, apply an armed fault, then answer one page."""
        provider = self.provider
        # The fake's own guard and fault bodies, so list and item answers cannot drift apart.
        denied = provider._guard(request, org_id)  # noqa: SLF001
        if denied is not None:
            return denied
        fault = self._take_fault(request)
        if fault is not None:
            faulted = render_fault(
                fault,
                normal=lambda: self._answer(request),
                error=provider._fault_error,  # noqa: SLF001
                wait=provider._wait,  # noqa: SLF001
            )
            if faulted is not None:
                return faulted
        return self._answer(request)

    def _take_fault(self, request: Request) -> Fault | None:
        token = _one(_params(request.query), "PageToken")
        try:
            page: int | None = 1 if token is None else Cursor.decode(token).page
        except ValueError:
            page = None  # the answer will be a 400; only "list" and unscoped faults can apply
        faults = self.provider.faults
        with self._fault_lock:
            page_ref = f"{LIST_FAULT_REF}:{page}"
            armed = page is not None and any(f["ref"] == page_ref for f in faults.active(NAME))
            return faults.take(NAME, page_ref if armed else LIST_FAULT_REF)

    def _answer(self, request: Request) -> Response:
        try:
            query = InvoiceQuery.parse(request.query)
        except ValueError as exc:
            return error_response(400, "BadRequest", str(exc))
        after = None if query.cursor is None else query.cursor.after
        matches = [
            body
            for body in sorted(self.bodies(), key=order_key)
            if (after is None or order_key(body) > after) and query.matches(body)
        ]
        page = matches[: query.page_size]
        token = Cursor(query.page + 1, order_key(page[-1])).encode() if len(matches) > len(page) else None
        return json_response(200, {"summary": {"status": "SUCCESS", "nextPageToken": token}, "data": page})

    def bodies(self) -> list[dict[str, Any]]:
        """Every invoice as ``GET .../invoices/{id}`` would give its ``data``, all at one instant."""
        provider = self.provider
        with provider._lock:  # noqa: SLF001
            # Copies, because set_stage moves an invoice's birth under this lock.
            invoices = [replace(invoice) for invoice in provider._invoices.values()]  # noqa: SLF001
        now = provider.clock.now()
        return [
            provider._render_invoice(  # noqa: SLF001
                invoice,
                provider._stage(invoice.born, len(INVOICE_LIVES[invoice.scenario]) - 1, now),  # noqa: SLF001
            )
            for invoice in invoices
        ]
