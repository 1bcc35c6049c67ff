"""Small pure helpers the normalizers share."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from worker.dates import iso_z, parse_http_date
from worker.errors import ProviderResponseInvalid

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake(value: Any) -> str | None:
    """An enum value in one spelling: ``"Open"``, ``"OPEN"`` and ``"open"`` all give ``"open"``;
    ``"PaymentReminder"`` and ``"PAYMENT_REMINDER"`` give ``"payment_reminder"``."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if not text.isupper():
        text = _CAMEL.sub("_", text)
    return re.sub(r"[\s\-]+", "_", text).lower()


def rfc1123_to_iso(value: Any) -> Any:
    """``"Tue, 07 Oct 2025 07:41:01 GMT"`` -> ``"2025-10-07T07:41:01Z"``; anything else unchanged."""
    if not isinstance(value, str):
        return value
    parsed = parse_http_date(value)
    return value if parsed is None else iso_z(parsed.astimezone(UTC))


def message_of(body: Any, *keys: str) -> str | None:
    """The first non-empty value of ``keys`` in a JSON object error body, as text; None otherwise."""
    if not isinstance(body, dict):
        return None
    text = next((body[k] for k in keys if body.get(k)), None)
    return str(text) if text else None


def obj(value: Any, what: str, provider: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else ProviderResponseInvalid naming ``what``."""
    if not isinstance(value, dict):
        raise ProviderResponseInvalid(f"{what} is a JSON {type(value).__name__}, not an object", provider=provider)
    return value


def optional_obj(value: Any, what: str, provider: str) -> dict[str, Any] | None:
    """Like :func:`obj` but None passes."""
    return None if value is None else obj(value, what, provider)


def objects(value: Any, what: str, provider: str) -> list[dict[str, Any]]:
    """A list of JSON objects (None is an empty list), else ProviderResponseInvalid."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProviderResponseInvalid(f"{what} is not a list of objects", provider=provider)
    return value


def number(value: Any) -> float | int | None:
    """A JSON number, or a numeric string, as a number; anything else None (tolerated)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return None
        # "1e999" parses to infinity, which no strict JSON document can carry.
        return parsed if math.isfinite(parsed) else None
    return None


def naive_utc(moment: datetime) -> datetime:
    """``moment`` as a zone-less UTC time (a zone-less one is taken as UTC): how sweeps compare a
    provider's modification times, whatever zone the provider writes them in."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment
