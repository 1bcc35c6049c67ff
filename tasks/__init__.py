"""Thin Celery tasks: each binds its log context and calls the service it fronts (polling,
delivery, sweeps, the prune), nothing else; the HTTP API calls the same services."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

import structlog

from config.settings import Settings, get_settings
from config.wiring import build_service
from worker import metrics

T = TypeVar("T")
C = TypeVar("C")

log = structlog.get_logger(__name__)


def per_process(build: Callable[[Settings], T]) -> Callable[[], T]:
    """``build(get_settings())``, made on first use and kept for the life of the process: a
    service keeps its database pool, its adapters' connections and their tokens between tasks."""
    return lru_cache(maxsize=1)(lambda: build(get_settings()))


#: The process's poller service, shared by the poll tasks and the sweep task.
poller_service = per_process(build_service)


def send_due(queue: str, dispatch: Callable[..., int], task: Any, claim: Callable[[C], list[int]], *, lease_s: float,
             event: str, lookahead_s: float = 0.0, **limits: Any) -> int:
    """One dispatch tick of ``queue`` (``polls``, ``deliveries``): ``dispatch`` claims what is due for
    ``lease_s`` and hands it over in chunks, each sent to ``task`` as ``[claim(c) ...]`` (``[id, lease]``)
    and a deadline, the end of the lease less the dispatch's ``lookahead_s``, after which the broker
    drops it. Times the tick and logs ``event`` when it claimed anything; returns how many it claimed."""
    started = datetime.now(UTC)
    # A dispatch looking ahead claims an item that much before its lease runs out: a chunk must
    # not start a poll after that, or the item's next claim polls it a second time meanwhile.
    deadline = started + timedelta(seconds=lease_s - lookahead_s)

    def enqueue(chunk: list[C]) -> None:
        task.apply_async(
            args=[[claim(c) for c in chunk], deadline.isoformat()],
            expires=deadline,
            # Celery would otherwise render the whole chunk for its logs, for every message sent.
            argsrepr=f"[<{len(chunk)} claims>, {deadline.isoformat()!r}]",
        )

    if lookahead_s:
        limits["lookahead_s"] = lookahead_s
    count = dispatch(enqueue, lease_s=lease_s, **limits)
    elapsed = (datetime.now(UTC) - started).total_seconds()
    metrics.dispatch(queue, elapsed)
    if count:
        log.info(event, claimed=count, seconds=round(elapsed, 4))
    return count
