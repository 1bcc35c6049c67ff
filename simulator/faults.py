"""Switchable failures ("fault switches") shared by all fake providers.

A provider asks ``FaultPlan.take(provider, ref)`` after authenticating a request
and, when a fault comes back, answers with ``render_fault`` instead of (or, for
"slow", before) its normal answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from simulator.router import HTML_TYPE, JSON_TYPE, Response

FAULT_KINDS: tuple[str, ...] = ("500", "503", "429", "slow", "malformed", "html", "404", "401", "drift")
DEFAULT_SLOW_DELAY = 5.0
DEFAULT_RETRY_AFTER = 1


@dataclass(frozen=True)
class Fault:
    """One armed fault. ``count`` is the number of uses left (None = until cleared)."""

    id: int
    provider: str
    kind: str
    count: int | None = None
    retry_after: int | None = None
    delay: float | None = None
    ref: str | None = None
    #: "drift": dotted paths removed from the normal JSON answer, and paths set to new values
    #: (an unknown enum value, a wrong type), so tests see a provider's schema change.
    drop: tuple[str, ...] = ()
    set: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the fault as a JSON-ready dict."""
        return asdict(self)


class FaultPlan:
    """Thread-safe set of armed faults, consumed one use per matching request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1

    def add(
        self,
        provider: str,
        kind: str,
        count: int | None = None,
        retry_after: int | None = None,
        delay: float | None = None,
        ref: str | None = None,
        drop: list[str] | None = None,
        set: dict[str, Any] | None = None,  # noqa: A002 - the admin API's own word
    ) -> dict[str, Any]:
        """Arm a fault for ``provider`` (optionally only for one ``ref``) and return it."""
        kind = str(kind)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; allowed kinds: {', '.join(FAULT_KINDS)}")
        if not isinstance(provider, str) or not provider:
            raise ValueError("provider must be a non-empty string")
        if count is not None and (not _is_int(count) or count < 1):
            raise ValueError(f"count must be a positive integer or null, got {count!r}")
        if retry_after is not None and (not _is_int(retry_after) or retry_after < 0):
            raise ValueError(f"retry_after must be a non-negative integer, got {retry_after!r}")
        if delay is not None and (not _is_number(delay) or delay < 0):
            raise ValueError(f"delay must be a non-negative number, got {delay!r}")
        if drop is not None and (not isinstance(drop, list) or not all(isinstance(d, str) and d for d in drop)):
            raise ValueError("drop must be a list of dotted paths")
        if set is not None and (not isinstance(set, dict) or not all(isinstance(k, str) and k for k in set)):
            raise ValueError("set must be an object of dotted path -> value")
        if kind == "drift" and not drop and not set:
            raise ValueError("a drift fault needs drop and/or set")
        if kind == "slow" and delay is None:
            delay = DEFAULT_SLOW_DELAY
        if kind == "429" and retry_after is None:
            retry_after = DEFAULT_RETRY_AFTER
        with self._lock:
            fault = Fault(
                id=self._next_id,
                provider=provider,
                kind=kind,
                count=count,
                retry_after=retry_after,
                delay=None if delay is None else float(delay),
                # Refs arrive as path segments, so compare them as strings.
                ref=None if ref is None else str(ref),
                drop=tuple(drop or ()),
                set=dict(set) if set else None,
            )
            self._next_id += 1
            self._faults.append(fault)
        return fault.as_dict()

    def clear(self, provider: str | None = None) -> int:
        """Disarm all faults, or only ``provider``'s; return how many were removed."""
        with self._lock:
            keep = [f for f in self._faults if provider is not None and f.provider != provider]
            removed = len(self._faults) - len(keep)
            self._faults = keep
        return removed

    def active(self, provider: str | None = None) -> list[dict[str, Any]]:
        """Return the armed faults (all, or one provider's) as dicts."""
        with self._lock:
            return [f.as_dict() for f in self._faults if provider is None or f.provider == provider]

    def take(self, provider: str, ref: str | None) -> Fault | None:
        """Consume one use of the fault that applies to this request, if any.

        A fault scoped to ``ref`` wins over an unscoped one, so a test can fail one
        order while a broad fault covers the rest.
        """
        return self.take_any(provider, [] if ref is None else [ref])

    def take_any(self, provider: str, refs: Sequence[str]) -> Fault | None:
        """Like ``take`` for a request known by several refs (an id and a number, say).

        The first ref some fault is scoped to wins, so a fault armed for an item hits
        however the request names it; else an unscoped fault applies.
        """
        with self._lock:
            candidates = [f for f in self._faults if f.provider == provider]
            chosen = next((f for ref in refs for f in candidates if f.ref is not None and f.ref == ref), None)
            if chosen is None:
                chosen = next((f for f in candidates if f.ref is None), None)
            return None if chosen is None else self._use_locked(chosen)

    def take_scoped(self, provider: str, ref: str) -> Fault | None:
        """Consume a fault scoped to exactly ``ref``; an unscoped one is left alone.

        For endpoints an unscoped fault is not meant for (token endpoints), or that try a
        narrow ref before a broad one (a list's page, then the list).
        """
        with self._lock:
            chosen = next((f for f in self._faults if f.provider == provider and f.ref == ref), None)
            return None if chosen is None else self._use_locked(chosen)

    def _use_locked(self, chosen: Fault) -> Fault:
        index = self._faults.index(chosen)
        if chosen.count is None:
            return chosen
        left = chosen.count - 1
        if left == 0:
            del self._faults[index]
        else:
            self._faults[index] = replace(chosen, count=left)
        return replace(chosen, count=left)


_HTML_500 = (
    b"<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\n"
    b"<body><h1>Internal Server Error</h1><p>The server encountered an internal error.</p></body></html>\n"
)
_HTML_503 = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1>"
    b"<p>The service is temporarily down for maintenance.</p></body></html>\n"
)
# What a captive portal or misrouted proxy hands back with a 200.
_HTML_200 = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    b"<body><h1>Please sign in</h1><form method=\"post\"><input name=\"user\"></form></body></html>\n"
)


def render_fault(
    fault: Fault,
    *,
    normal: Callable[[], Response],
    error: Callable[[int], Response],
    wait: Callable[[float], object],
) -> Response | None:
    """Turn a taken fault into the response to send.

    ``normal`` builds the answer the provider would have given, ``error(status)``
    builds the provider's own error body for 401/404/429, and ``wait`` sleeps.
    Returns None for "slow": the caller then answers normally, late.
    """
    kind = fault.kind
    if kind == "slow":
        wait(fault.delay if fault.delay is not None else DEFAULT_SLOW_DELAY)
        return None
    if kind == "500":
        return Response(500, _HTML_500, HTML_TYPE)
    if kind == "503":
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        return Response(503, _HTML_503, HTML_TYPE, headers)
    if kind == "429":
        response = error(429)
        retry_after = fault.retry_after if fault.retry_after is not None else DEFAULT_RETRY_AFTER
        response.headers["Retry-After"] = str(retry_after)
        return response
    if kind in ("401", "404"):
        return error(int(kind))
    if kind == "malformed":
        body = normal().body
        # A strict prefix of a JSON object always lacks its closing brace, so
        # this is guaranteed invalid while still looking like the real thing.
        return Response(200, body[: max(1, len(body) // 2)], JSON_TYPE)
    if kind == "html":
        return Response(200, _HTML_200, HTML_TYPE)
    if kind == "drift":
        answer = normal()
        try:
            body = json.loads(answer.body)
        except ValueError:
            return answer
        for path in fault.drop:
            _apply(body, path, None, remove=True)
        for path, value in (fault.set or {}).items():
            _apply(body, path, value, remove=False)
        return Response(answer.status, json.dumps(body).encode(), JSON_TYPE, dict(answer.headers))
    raise ValueError(f"unknown fault kind {kind!r}")


def _apply(body: Any, path: str, value: Any, *, remove: bool) -> None:
    """Remove or set ``a.b.0.c`` inside a JSON value; missing parents are left alone."""
    *parents, last = path.split(".")
    node = body
    for part in parents:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return
    if isinstance(node, dict):
        if remove:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        if remove:
            del node[int(last)]
        else:
            node[int(last)] = value


def _is_int(value: object) -> bool:
    # bool is an int subclass; JSON true must not pass as a count of 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
