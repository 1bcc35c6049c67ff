"""Fake of Billit's order list, ``GET /v1/orders?$filter=…&$orderby=…&$top=…&$skip=…``.

PROVIDERS.md section 5, "List / incremental" (https://docs.billit.be/docs/odata). Kept apart from
simulator.billit, which serves the same orders one at a time: each entry of ``Items`` is exactly the
body ``GET /v1/orders/{id}`` gives at that instant.

- Paging: at most 120 orders a page (``$top`` lowers the page size, never raises it); ``$skip``
  works. ``NextPageLink`` is the absolute URL of the next page (same ``$filter``, ``$orderby`` and
  ``$top``, the next ``$skip``) while more records remain, and null on the last page.
- ``$filter``: ``<Property> <eq|ne|gt|ge|lt|le> <literal>`` joined by ``and``; literals
  ``DateTime'2022-01-01'`` / ``DateTime'2025-05-07T14:09:17.563'`` (zone-less, like LastModified),
  ``'text'``, numbers, ``true``/``false``/``null``. Only Billit's filterable properties: any other
  answers 400 GenericError, as Billit does.
- ``$orderby``: ``<Property> [asc|desc]``, comma-separated, default ``OrderID asc``. Ties always
  fall back to OrderID asc, so ``$skip`` paging neither skips nor repeats an order while nothing
  changes.
- Faults: an unscoped billit fault hits list requests too; ``ref: "list"`` hits only list
  requests, and ``ref: "list:<skip>"`` only the page starting at that ``$skip`` (``list:0`` is the
  first page), so a test can fail page 2 before the client starts.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

from simulator.billit_order import Order, OrderBodies, error_response
from simulator.router import Request, Response, Router, json_response


class Orders(Protocol):
    """What the list needs of the Billit fake (``simulator.billit.FakeBillit``)."""

    bodies: OrderBodies

    def authenticate(self, request: Request) -> Response | None:
        """The 401 to send, or None."""

    def staged_orders(self) -> list[tuple[Order, int]]:
        """Every order with its stage, at one instant."""

    def _serve_list(self, denied: Response | None, page: object, answer: Callable[[], Response]) -> Response:
        """The refusal, a fault armed for the page or the list, or ``answer()``."""

    @property
    def name(self) -> str:
        """The provider name, the list's stats label."""

PAGE_SIZE = 120

DATETIME, NUMBER, BOOLEAN, STRING = "DateTime", "Number", "Boolean", "String"

#: Billit's filterable properties (restricted list since 17/03/2026) and their OData types. The
#: fake renders only some of them; the others read as null, as an unset field would.
FILTERABLE: dict[str, str] = {
    "OrderID": NUMBER,
    "CounterParty/PartyID": NUMBER,
    "CompanyID": NUMBER,
    "OrderDirection": STRING,
    "OrderType": STRING,
    "OrderDate": DATETIME,
    "OrderNumber": STRING,
    "ExpiryDate": DATETIME,
    "ExportedToConnector": BOOLEAN,
    "AccountantVerificationNeeded": BOOLEAN,
    "TotalExcl": NUMBER,
    "TotalVAT": NUMBER,
    "TotalIncl": NUMBER,
    "FXRateToForeign": NUMBER,
    "Paid": BOOLEAN,
    "OrderStatus": STRING,
    "ExternalProviderID": STRING,
    "Currency": STRING,
    "PaymentReference": STRING,
    "LastModified": DATETIME,
    "Created": DATETIME,
    "ApprovalStatus": STRING,
    "PaidDate": DATETIME,
    "PaymentMethod": STRING,
    "Reference": STRING,
    "RemindersSent": NUMBER,
    "ExternalProvider": STRING,
    "IsSent": BOOLEAN,
}

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_KEYWORDS = ("and", "or", "not", "true", "false", "null")

# One token of a $filter; the lookahead stops "12abc" from reading as the number 12.
_TOKEN = re.compile(
    r"\s*(?:(?P<datetime>(?i:datetime)'[^']*')"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<number>[-+]?\d+(?:\.\d+)?)(?![\w.])"
    r"|(?P<word>[A-Za-z_]\w*(?:/[A-Za-z_]\w*)*))"
)
# Only blanks left: the end of a $filter.
_END = re.compile(r"\s*\Z")
# Kept readable in links (as in Billit's documented examples); spaces, "&", "+" and "#" are escaped.
_QUOTE_SAFE = "'(),:/"
# A host name, IPv4 or bracketed IPv6 address, with an optional port: nothing that could end the
# authority part of the URL we build from it.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


class QueryError(Exception):
    """A ``$filter``/``$orderby``/``$top``/``$skip`` Billit refuses; answered 400 GenericError."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Comparison:
    """One ``<Property> <op> <literal>`` of a ``$filter``, with the literal already typed."""

    prop: str
    op: str
    value: Any

    def matches(self, body: dict[str, Any]) -> bool:
        """Whether the rendered order ``body`` passes this comparison (OData null rules)."""
        actual = property_value(body, self.prop)
        if actual is None or self.value is None:
            both = actual is None and self.value is None
            if self.op == "eq":
                return both
            # Ordering against null is never true; parse_filter refuses a null literal there.
            return not both if self.op == "ne" else False
        return _OPERATORS[self.op](actual, self.value)


def property_value(body: dict[str, Any], prop: str) -> Any:
    """The typed value of ``prop`` (``CounterParty/PartyID`` walks into objects) in an order body."""
    node: Any = body
    for part in prop.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    if node is not None and FILTERABLE.get(prop) == DATETIME:
        # Compared as datetimes, like the DateTime literals they meet, not as text.
        return datetime.fromisoformat(str(node))
    return node


def _check_property(name: str, option: str) -> None:
    if name in FILTERABLE:
        return
    hint = next((p for p in FILTERABLE if p.lower() == name.lower()), None)
    if hint is not None:
        raise QueryError(f"Property '{name}' in {option} is unknown; property names are case-sensitive: '{hint}'")
    what = "is not filterable" if option == "$filter" else f"cannot be used in {option}"
    raise QueryError(f"Property '{name}' {what}; filterable properties: {', '.join(FILTERABLE)}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    # Matching in place (no slicing per token) keeps a long $filter linear.
    while not _END.match(text, pos):
        match = _TOKEN.match(text, pos)
        if match is None:
            start = len(text) - len(text[pos:].lstrip())
            raise QueryError(f"Malformed $filter: unexpected text at position {start}: '{text[start:start + 20]}'")
        kind = match.lastgroup
        assert kind is not None  # every alternative is a named group
        tokens.append(_Token(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


def _literal(token: _Token) -> tuple[str | None, Any]:
    """The OData type (None for null) and Python value of a literal token."""
    if token.kind == "datetime":
        stamp = token.text[token.text.index("'") + 1 : -1]
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:
            raise QueryError(f"Malformed $filter: invalid DateTime literal {token.text}") from None
        if moment.tzinfo is not None:
            raise QueryError(f"Malformed $filter: DateTime literal {token.text} must not carry a zone")
        return DATETIME, moment
    if token.kind == "string":
        return STRING, token.text[1:-1].replace("''", "'")
    if token.kind == "number":
        # Floats, not Decimals: the bodies' amounts are JSON floats, and 123.45 must equal 123.45.
        return NUMBER, float(token.text) if "." in token.text else int(token.text)
    word = token.text.lower()
    if word in ("true", "false"):
        return BOOLEAN, word == "true"
    if word == "null":
        return None, None
    raise QueryError(f"Malformed $filter: expected a literal at position {token.pos}, got '{token.text}'")


def _comparison(prop: _Token, op: _Token, literal: _Token) -> Comparison:
    if prop.kind != "word" or prop.text.lower() in _KEYWORDS:
        raise QueryError(f"Malformed $filter: expected a property name at position {prop.pos}, got '{prop.text}'")
    _check_property(prop.text, "$filter")
    name = op.text.lower()
    if op.kind != "word" or name not in _OPERATORS:
        raise QueryError(
            f"Malformed $filter: expected an operator ({', '.join(_OPERATORS)}) after '{prop.text}', got '{op.text}'"
        )
    kind, value = _literal(literal)
    if kind is None and name not in ("eq", "ne"):
        raise QueryError(f"Malformed $filter: '{prop.text} {op.text} null' can only use eq or ne")
    if kind is not None and kind != FILTERABLE[prop.text]:
        raise QueryError(
            f"Malformed $filter: cannot compare {prop.text} ({FILTERABLE[prop.text]}) with {literal.text} ({kind})"
        )
    return Comparison(prop.text, name, value)


def parse_filter(text: str) -> list[Comparison]:
    """Parse ``<Property> <op> <literal> [and …]``; raise QueryError with Billit's kind of message."""
    tokens = _tokenize(text)
    if not tokens:
        raise QueryError("Malformed $filter: it is empty")
    comparisons: list[Comparison] = []
    index = 0
    while True:
        if index + 3 > len(tokens):
            raise QueryError("Malformed $filter: incomplete comparison, expected <Property> <operator> <literal>")
        comparisons.append(_comparison(*tokens[index : index + 3]))
        index += 3
        if index == len(tokens):
            return comparisons
        joiner = tokens[index]
        if joiner.kind != "word" or joiner.text.lower() != "and":
            supported = " (this simulator supports only 'and')" if joiner.text.lower() == "or" else ""
            raise QueryError(
                f"Malformed $filter: expected 'and' at position {joiner.pos}, got '{joiner.text}'{supported}"
            )
        index += 1


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """Parse ``<Property> [asc|desc], …`` into ``(property, descending)`` pairs."""
    keys: list[tuple[str, bool]] = []
    for clause in text.split(","):
        words = clause.split()
        if not 1 <= len(words) <= 2:
            raise QueryError(f"Malformed $orderby clause '{clause.strip()}': expected <Property> [asc|desc]")
        _check_property(words[0], "$orderby")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise QueryError(f"Malformed $orderby clause '{clause.strip()}': direction must be asc or desc")
        keys.append((words[0], direction == "desc"))
    return keys


def _sort_key(prop: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    def key(body: dict[str, Any]) -> tuple[bool, Any]:
        value = property_value(body, prop)
        # Nulls first (as SQL Server sorts them ascending); values of one property share a type.
        return value is not None, value

    return key


def sort_bodies(bodies: list[dict[str, Any]], keys: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Order bodies by ``keys``, breaking every tie by OrderID ascending."""
    ordered = sorted(bodies, key=lambda body: int(body["OrderID"]))
    # Stable sorts from the last key to the first; reverse=True keeps equal keys in their order too,
    # so the OrderID tie-break survives a descending key.
    for prop, descending in reversed(keys):
        ordered.sort(key=_sort_key(prop), reverse=descending)
    return ordered


def _count(request: Request, name: str) -> int | None:
    raw = request.query_one(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.strip().isdigit()):
        raise QueryError(f"{name} must be a non-negative integer, got '{raw}'")
    return int(raw)


@dataclass(frozen=True)
class ListQuery:
    """The parsed query options of one list request."""

    filter_text: str | None
    filters: list[Comparison]
    orderby_text: str | None
    orderby: list[tuple[str, bool]]
    top: int | None
    skip: int

    @classmethod
    def from_request(cls, request: Request) -> ListQuery:
        """Read and check ``$filter``, ``$orderby``, ``$top`` and ``$skip``; raise QueryError."""
        filter_text = request.query_one("$filter")
        orderby_text = request.query_one("$orderby")
        top = _count(request, "$top")
        return cls(
            filter_text=filter_text,
            filters=[] if filter_text is None else parse_filter(filter_text),
            orderby_text=orderby_text,
            orderby=[] if orderby_text is None else parse_orderby(orderby_text),
            top=None if top is None else min(top, PAGE_SIZE),
            skip=_count(request, "$skip") or 0,
        )

    @property
    def page_size(self) -> int:
        """Orders on this page: ``$top`` if given, never more than PAGE_SIZE."""
        return PAGE_SIZE if self.top is None else self.top

    def next_page_query(self) -> str:
        """The query string of the page after this one."""
        params = [("$filter", self.filter_text), ("$orderby", self.orderby_text)]
        params += [("$top", None if self.top is None else str(self.top)), ("$skip", str(self.skip + self.page_size))]
        return "&".join(f"{name}={quote(value, safe=_QUOTE_SAFE)}" for name, value in params if value is not None)


class OrderList:
    """``GET /v1/orders`` over one Billit fake's orders, with its auth and fault plan."""

    def __init__(self, billit: Orders) -> None:
        self.billit = billit

    def register(self, router: Router) -> None:
        """Add the list route, counted under the billit label like the item route."""
        router.add("GET", "/v1/orders", self.handle, label=self.billit.name)

    def handle(self, request: Request) -> Response:
        """Authenticate, apply an armed fault, then answer one page."""
        try:
            skip: int | None = _count(request, "$skip") or 0
        except QueryError:
            skip = None
        # The same fake's own auth and fault bodies, so list and item answers cannot drift apart.
        return self.billit._serve_list(  # noqa: SLF001
            self.billit.authenticate(request), skip, lambda: self._answer(request)
        )

    def _answer(self, request: Request) -> Response:
        try:
            query = ListQuery.from_request(request)
        except QueryError as exc:
            return error_response(400, "GenericError", str(exc))
        bodies = [body for body in self._bodies() if all(c.matches(body) for c in query.filters)]
        ordered = sort_bodies(bodies, query.orderby)
        end = query.skip + query.page_size
        next_link: str | None = None
        # A zero page size would link to itself forever, so $top=0 is one empty last page.
        if query.page_size > 0 and end < len(ordered):
            host = (request.header("Host") or "").strip()
            if not _HOST.match(host):
                return error_response(400, "GenericError", "A valid Host header is needed to build NextPageLink")
            # The simulator serves plain HTTP only, so the scheme is known.
            next_link = f"http://{host}/v1/orders?{query.next_page_query()}"
        # Null rather than absent on the last page, as ASP.NET's PageResult (Items, NextPageLink) writes it.
        return json_response(200, {"Items": ordered[query.skip : end], "NextPageLink": next_link})

    def _bodies(self) -> list[dict[str, Any]]:
        """Every order as ``GET /v1/orders/{id}`` would give it, all at one instant."""
        return [self.billit.bodies.render(order, stage) for order, stage in self.billit.staged_orders()]
