"""Strict JSON at the edge: what a provider sends must be storable and sendable as RFC 8259 JSON.

Python's json module reads and writes ``NaN``, ``Infinity`` and ``1e999`` (as infinity) unless
told otherwise; PostgreSQL's JSONB refuses them, and so do strict receivers. A NaN also never
equals itself, so a document holding one differs from its own snapshot on every poll. Pure.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import msgspec

from worker.domain import StatusDocument

#: Deeper than any provider document we know (they nest under ten levels); far below the
#: ~1000 levels at which Python's json gives up with a RecursionError.
MAX_DEPTH = 64
#: The width of ``items.last_status`` and ``snapshots.status``.
MAX_STATUS_CHARS = 80


class NotStrictJSON(ValueError):
    """A value is not strict JSON; the message says what and where."""


def _reject_constant(name: str) -> Any:
    raise NotStrictJSON(f"the non-finite number {name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStrictJSON(f"the number {text[:40]} is out of range")
    return value


def loads_strict(text: str) -> Any:
    """Parse JSON refusing NaN, Infinity, out-of-range numbers and absurd nesting.

    Raises:
        NotStrictJSON: the text is JSON only by Python's lenient reading, or nested too deeply.
        json.JSONDecodeError: the text is not JSON at all.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise NotStrictJSON(f"nested deeper than {MAX_DEPTH} levels") from None
    check_value(value)
    return value


def dumps_strict(value: Any) -> str:
    """Compact JSON that refuses NaN and Infinity (``ValueError``): the database's serializer."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


#: msgspec's JSON decoder: it reads integers of any size exactly (orjson reads one past 64 bits
#: as a float: an invoice number or an amount would silently change).
_DECODE = msgspec.json.Decoder().decode


def loads_stored(data: str | bytes) -> Any:
    """The database's deserializer: msgspec, which read a page of 1,000 stored events twice as fast
    as json (whose decoding was 13-17 ms of it). What msgspec refuses and json reads is read by
    json, so what was stored comes back as it was."""
    try:
        return _DECODE(data)
    except msgspec.DecodeError:
        return json.loads(data)


def check_value(value: Any, what: str = "document") -> None:
    """Raise NotStrictJSON if ``value`` holds a non-finite float or nests deeper than MAX_DEPTH.

    Iterative, so a hostile document cannot exhaust the stack while being checked.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise NotStrictJSON(f"{what} holds the non-finite number {node}")
        if isinstance(node, dict | list):
            if depth >= MAX_DEPTH:
                raise NotStrictJSON(f"{what} is nested deeper than {MAX_DEPTH} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)


def check_document(doc: StatusDocument) -> None:
    """Raise NotStrictJSON if a normalized document cannot be stored and sent as it is."""
    if not isinstance(doc.status, str) or not doc.status:
        raise NotStrictJSON(f"status must be a non-empty string, got {doc.status!r}"[:120])
    if len(doc.status) > MAX_STATUS_CHARS:
        raise NotStrictJSON(f"status is {len(doc.status)} characters long (at most {MAX_STATUS_CHARS})")
    check_value(doc.fields, "fields")
    check_value(doc.raw, "body")


def document_digest(doc: StatusDocument) -> str:
    """A digest of what decides whether a document is a change: its status, terminal flag and
    fields (not the raw body or the version). Equal digests mean equal documents, so a poll whose
    document has its item's stored digest changed nothing, and needs no read of the snapshot."""
    canonical = json.dumps([doc.status, doc.terminal, doc.fields], sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, allow_nan=False)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
