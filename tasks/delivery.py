"""Delivery tasks: the beat fan-out and the chunked sends."""

from __future__ import annotations

from datetime import datetime

import structlog
from celery import shared_task

from config.celery_app import DELIVER_DUE_TASK, DELIVER_TASK
from config.settings import get_settings
from config.wiring import build_delivery
from tasks import per_process, send_due
from worker.store.delivery_claims import DeliveryClaim

_service = per_process(build_delivery)


@shared_task(name=DELIVER_DUE_TASK, ignore_result=True)
def deliver_due() -> int:
    """Claim due deliveries and enqueue them in chunks. Runs every tick, and right after a poll
    that wrote events (so a change does not wait for the next tick)."""
    settings = get_settings()
    return send_due("deliveries", _service().dispatch_due, deliver, lambda c: [c.delivery_id, c.lease_id],
                    lease_s=settings.delivery_lease_seconds, event="deliveries.dispatched",
                    limit=settings.delivery_limit, chunk_size=settings.delivery_chunk)


@shared_task(name=DELIVER_TASK, ignore_result=True)
def deliver(claims: list[list[int]], deadline: str) -> dict[str, int]:
    """Attempt a chunk of deliveries once each and record the results."""
    with structlog.contextvars.bound_contextvars(task=DELIVER_TASK, chunk=len(claims)):
        report = _service().deliver([DeliveryClaim(d, lease) for d, lease in claims],
                                    deadline=datetime.fromisoformat(deadline))
    return {"sent": report.sent, "succeeded": report.succeeded, "retrying": report.retrying,
            "failed": report.failed, "lost_lease": report.lost_lease, "skipped": report.skipped}
