"""Maintenance tasks: the daily prune (beat sends it at POLLER_PRUNE_AT)."""

from __future__ import annotations

from celery import shared_task

from config.celery_app import PRUNE_TASK
from config.settings import get_settings
from config.wiring import retention_for

#: A prune works in short batches and may take a while on a large store; the tasks' default time
#: limit (a poll lease and a half) is far too short for it.
PRUNE_TIME_LIMIT_S = 6 * 3600


@shared_task(name=PRUNE_TASK, ignore_result=True, time_limit=PRUNE_TIME_LIMIT_S,
             soft_time_limit=PRUNE_TIME_LIMIT_S - 60)
def prune() -> dict[str, int]:
    """Remove history older than the POLLER_RETENTION_* settings."""
    return retention_for(get_settings()).prune()
