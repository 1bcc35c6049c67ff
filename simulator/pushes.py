"""The providers' pushes, simulated: when an order, invoice or batch moves on to its next stage, the
fake posts what the real provider would, so the poller's ingress runs end to end in tests and the
tour.

- Billit: to each webhook registered through ``POST /v1/webhooks`` (``EntityType`` Order or
  Message, ``EntityUpdateType`` U), signed ``Billit-Signature: t=<unix>,s=<hex>`` with that
  webhook's secret (https://docs.billit.be/docs/verify-signature).
- Amili Norway: ``CASE_UPDATED`` (an invoice's case) or ``BATCH_COMPLETED`` to the URL set through
  ``POST /_sim/amili_collection/webhooks``, with ``X-Amili-Event`` and a fresh ``IdempotencyKey``.

A source tells the pusher when each object next changes (simulated seconds); a thread wakes every
``tick_s`` real seconds and pushes what the clock has reached, so a test that advances the clock
sees the push within a tick. ``log`` keeps ``(url, status)`` of every push sent (status 0: no answer).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulator.clock import SimClock

#: (url, body, headers) of one push.
Push = tuple[str, bytes, dict[str, str]]


class Source(Protocol):
    """A fake whose objects push when they change."""

    def stage_of(self, object_id: str) -> int: ...

    def next_change_at(self, object_id: str) -> float | None: ...

    def pushes_for(self, object_id: str, stage: int) -> list[Push]: ...


def http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body``; the status, or 0 when nothing answered."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - our own test URLs
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return 0


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    source: str = field(compare=False)
    object_id: str = field(compare=False)


class Pusher:
    """Pushes each object's changes as the simulated clock reaches them."""

    def __init__(self, clock: SimClock, *, post: Callable[[str, bytes, dict[str, str]], int] = http_post,
                 tick_s: float = 0.05) -> None:
        self.clock, self.post, self.tick_s = clock, post, tick_s
        self.sources: dict[str, Source] = {}
        self.log: list[tuple[str, int]] = []
        self._heap: list[_Due] = []
        self._seen: dict[tuple[str, str], int] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_source(self, name: str, source: Source) -> None:
        """Watch ``source``'s objects (each registered through ``changed``)."""
        self.sources[name] = source

    def changed(self, name: str, object_id: str, *, stage: int | None = None) -> None:
        """An object was created (``stage`` its first) or moved: check it now, then as it moves on."""
        with self._lock:
            if stage is not None:
                self._seen[name, object_id] = stage
            heapq.heappush(self._heap, _Due(self.clock.now(), next(self._seq), name, object_id))

    def start(self) -> None:
        """Push from a daemon thread until ``stop``."""
        self._thread = threading.Thread(target=self._run, name="simulator-pushes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop pushing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def run_due(self) -> int:
        """Push every change the clock has reached; returns how many objects changed."""
        changed = 0
        while True:
            with self._lock:
                if not self._heap or self._heap[0].at > self.clock.now():
                    return changed
                due = heapq.heappop(self._heap)
            source = self.sources[due.source]
            try:
                stage = source.stage_of(due.object_id)
            except KeyError:
                continue
            key = (due.source, due.object_id)
            if self._seen.get(key) != stage:
                self._seen[key] = stage
                changed += 1
                for url, body, headers in source.pushes_for(due.object_id, stage):
                    self.log.append((url, self.post(url, body, headers)))
            following = source.next_change_at(due.object_id)
            if following is not None:
                with self._lock:
                    heapq.heappush(self._heap, _Due(following, next(self._seq), due.source, due.object_id))

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            # A fake must keep pushing whatever one push did.
            with contextlib.suppress(Exception):
                self.run_due()


def describe(pushes: list[tuple[str, int]]) -> dict[str, Any]:
    """Counts of pushes by answer, for ``/_sim/stats``-like views."""
    out: dict[str, int] = {}
    for _, status in pushes:
        out[str(status)] = out.get(str(status), 0) + 1
    return {"sent": len(pushes), "by_status": out}
