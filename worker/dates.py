"""Times as text, in the two spellings the project reads and writes. Pure.

HTTP dates (RFC 1123: ``Tue, 07 Oct 2025 07:41:01 GMT``) come in ``Retry-After`` headers and in
some providers' bodies; ISO 8601 with a ``Z`` is what we write (webhook payloads, the API, the
CLI's ``--json``, the status page) and what the CLI and token responses may give us.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import overload


def parse_http_date(text: str) -> datetime | None:
    """An RFC 1123 date as an aware datetime (UTC when it names no zone), or None if it is not one."""
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time, ``Z`` or an offset or neither (then UTC), as an aware datetime.

    Raises:
        ValueError: ``text`` is not ISO 8601.
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@overload
def iso_z(value: datetime) -> str: ...
@overload
def iso_z(value: None) -> None: ...
def iso_z(value: datetime | None) -> str | None:
    """ISO 8601 with ``Z`` for UTC (``2026-11-23T10:00:00Z``); another offset is kept; None stays None."""
    return value.isoformat().replace("+00:00", "Z") if value else None
