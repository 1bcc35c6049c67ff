"""Query binding shared by Amili Norway's two lists (cases and invoices): ASP.NET-style parameters,
ISO 8601 instants, and the cases list's ``CaseQuery`` and page cursor."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100

_CURSOR = re.compile(r"^after:(\d+)$")


def query_params(query: dict[str, list[str]]) -> dict[str, list[str]]:
    """Query parameters by lower-cased name (ASP.NET binds names case-insensitively)."""
    params: dict[str, list[str]] = {}
    for key, values in query.items():
        params.setdefault(key.lower(), []).extend(values)
    return params


def query_one(params: dict[str, list[str]], name: str) -> str | None:
    """The first non-empty value of ``name``, or None."""
    values = [v for v in params.get(name.lower(), []) if v != ""]
    return values[0] if values else None


def query_many(params: dict[str, list[str]], name: str) -> frozenset[str]:
    """Every value of ``name``, upper-cased: ``Status=OPEN&Status=PAUSED`` and ``Status=OPEN,PAUSED`` alike."""
    return frozenset(
        part.strip().upper() for v in params.get(name.lower(), []) for part in v.split(",") if part.strip()
    )


@dataclass(frozen=True)
class CaseQuery:
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
    def parse(cls, query: dict[str, list[str]]) -> CaseQuery:
        """Read the documented parameters (names case-insensitive, as ASP.NET binds them).

        Raises:
            ValueError: a malformed date, page size or page token.
        """
        params = query_params(query)
        one, many = partial(query_one, params), partial(query_many, params)
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
            created_before = parse_instant("ToCreatedAt", raw_to)
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
            created_from=parse_instant("FromCreatedAt", raw_from) if raw_from is not None else None,
            created_before=created_before,
            after=decode_cursor(token) if token is not None else 0,
            page_size=page_size,
        )

    def matches(self, case: dict[str, Any], debtor_name: str, created: datetime) -> bool:
        """True when ``case`` passes every given filter."""
        equal = {
            "caseNumber": self.case_number,
            "customerNumber": self.customer_number,
            "uniqueSourceInvoiceId": self.source_id,
        }
        if not fields_match(case, equal, {"status": self.statuses, "type": self.types}):
            return False
        if self.search is not None:
            keys = ("caseNumber", "invoiceNumber", "uniqueSourceInvoiceId", "customerNumber")
            if self.search not in " ".join([*(case[key] for key in keys), debtor_name]).lower():
                return False
        return in_range(created.replace(microsecond=0), self.created_from, self.created_before)


def fields_match(body: dict[str, Any], equal: dict[str, str | None], one_of: dict[str, frozenset[str]]) -> bool:
    """Whether ``body`` has every given value of ``equal``, and one of each given set of ``one_of``
    (upper-cased, so ``OPEN`` finds ``Open``); None and empty sets filter nothing."""
    if any(values and body[key].upper() not in values for key, values in one_of.items()):
        return False
    return all(value is None or body[key] == value for key, value in equal.items())


def in_range(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    """``start <= moment < end``, either bound optional."""
    return (start is None or moment >= start) and (end is None or moment < end)


def parse_instant(name: str, text: str) -> datetime:
    """Parse an ISO 8601 date or datetime to naive UTC (the SimClock's wall clock is UTC)."""
    try:
        # An unescaped "+" of a zone offset arrives as a space after query decoding.
        moment = datetime.fromisoformat(re.sub(r" (\d{2}:?\d{2})$", r"+\1", text))
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date or date-time, got {text!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    match = _CURSOR.match(text)
    if match is None:
        raise ValueError(f"PageToken {token!r} is not valid")
    return int(match.group(1))
