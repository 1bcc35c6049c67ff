"""Polling tasks: the beat fan-out and the chunked polls."""

from __future__ import annotations

from datetime import datetime

import structlog
from celery import current_app, shared_task

from config.celery_app import DELIVER_DUE_TASK, DISPATCH_TASK, POLL_TASK
from config.settings import get_settings
from config.wiring import require_writable_database
from tasks import poller_service, send_due
from worker.store.repo import Claim


@shared_task(name=DISPATCH_TASK, ignore_result=True)
def dispatch_due() -> int:
    """Claim due items and enqueue them as poll_items chunks. Runs every tick."""
    settings = get_settings()
    # A deleted, replaced or read-only SQLite file would otherwise go unnoticed (writes to an
    # unlinked file succeed): fail the tick, which health reports.
    require_writable_database(settings)
    return send_due("polls", poller_service().dispatch_due, poll_items, lambda c: [c.item_id, c.lease_id],
                    lease_s=settings.lease_seconds, event="dispatch.tick", limit=settings.dispatch_limit,
                    chunk_size=settings.dispatch_chunk, lookahead_s=settings.tick_seconds / 2)


@shared_task(name=POLL_TASK, ignore_result=True)
def poll_items(claims: list[list[int]], deadline: str) -> dict[str, int]:
    """Poll a chunk of claimed items, starting none that could still run at ``deadline``."""
    with structlog.contextvars.bound_contextvars(task=POLL_TASK, chunk=len(claims)):
        report = poller_service().poll_claims([Claim(i, lease) for i, lease in claims],
                                        deadline=datetime.fromisoformat(deadline))
    if report.events:
        # Deliver now rather than at the next tick: change-to-webhook latency is the point.
        current_app.send_task(DELIVER_DUE_TASK, expires=get_settings().tick_seconds)
    return {"polled": report.polled, "changed": report.changed, "failed": report.failed,
            "gone": report.gone, "lost_lease": report.lost_lease, "skipped": report.skipped}
