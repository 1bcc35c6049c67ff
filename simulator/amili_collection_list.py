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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from simulator.amili_collection_bodies import CUSTOM_ID, CollectionBodies, Invoice
from simulator.amili_query import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    fields_match,
    in_range,
    parse_instant,
    query_many,
    query_one,
    query_params,
)
from simulator.router import Request, Response, Router, json_response

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
        if match is None or int(match.group(1)) < 2 or not CUSTOM_ID.match(match.group(3)):
            raise invalid
        try:
            datetime.strptime(match.group(2), _STAMP_FORMAT)
        except ValueError:
            raise invalid from None
        return cls(int(match.group(1)), (match.group(2), match.group(3)))


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
        return parse_instant("To", raw) + timedelta(microseconds=1)
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
        params = query_params(query)
        raw_from, raw_to, token = (query_one(params, name) for name in ("From", "To", "PageToken"))
        return cls(
            statuses=query_many(params, "Status"),
            types=query_many(params, "Type"),
            invoice_number=query_one(params, "InvoiceNumber"),
            source_id=query_one(params, "UniqueSourceInvoiceId"),
            customer_number=query_one(params, "CustomerNumber"),
            created_from=None if raw_from is None else parse_instant("From", raw_from),
            created_before=None if raw_to is None else _created_before(raw_to),
            cursor=None if token is None else Cursor.decode(token),
            page_size=_page_size(query_one(params, "PageSize")),
        )

    @property
    def page(self) -> int:
        """The page number this request asks for (1 without a PageToken)."""
        return 1 if self.cursor is None else self.cursor.page

    def matches(self, body: dict[str, Any]) -> bool:
        """True when the rendered invoice ``body`` passes every given filter."""
        equal = {"invoiceNumber": self.invoice_number, "uniqueSourceInvoiceId": self.source_id}
        if not fields_match(body, equal, {"status": self.statuses, "type": self.types}):
            return False
        if self.customer_number is not None and all(
            d["customerNumber"] != self.customer_number for d in body["debtors"]
        ):
            return False
        created = datetime.strptime(body["createdAt"], _STAMP_FORMAT)
        return in_range(created, self.created_from, self.created_before)


class Invoices(Protocol):
    """What the list needs of the Debt.Collection fake (``simulator.amili_collection.FakeAmiliCollection``)."""

    bodies: CollectionBodies

    def guard(self, request: Request, org_id: str) -> Response | None:
        """The 401 or 403 to send, or None."""

    def error(self, status: int, *args: Any) -> Response:
        """Amili's error body."""

    def staged_invoices(self) -> list[tuple[Invoice, int]]:
        """Every invoice with its stage, at one instant."""

    def _serve_list(self, denied: Response | None, page: object, answer: Callable[[], Response]) -> Response:
        """The refusal, a fault armed for the page or the list, or ``answer()``."""

    @property
    def name(self) -> str:
        """The provider name, the list's stats label."""


class InvoiceList:
    """``GET /orgs/{orgId}/invoices`` over one Debt.Collection fake's invoices, auth and faults."""

    def __init__(self, provider: Invoices) -> None:
        self.provider = provider

    def register(self, router: Router) -> None:
        """Add the list route, counted under the amili_collection label like the item routes."""
        router.add("GET", "/orgs/{org_id}/invoices", self.handle, label=self.provider.name)

    def handle(self, request: Request, org_id: str) -> Response:
        """Authenticate, apply an armed fault, then answer one page."""
        token = query_one(query_params(request.query), "PageToken")
        try:
            page: int | None = 1 if token is None else Cursor.decode(token).page
        except ValueError:
            page = None
        # The fake's own guard and fault bodies, so list and item answers cannot drift apart.
        return self.provider._serve_list(  # noqa: SLF001
            self.provider.guard(request, org_id), page, lambda: self._answer(request)
        )

    def _answer(self, request: Request) -> Response:
        try:
            query = InvoiceQuery.parse(request.query)
        except ValueError as exc:
            return self.provider.error(400, "BadRequest", str(exc))
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
        return [provider.bodies.invoice(invoice, stage) for invoice, stage in provider.staged_invoices()]
