"""The sweep tick: beat sends it each tick when any provider account has a sweep interval."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from config.celery_app import SWEEP_TASK
from config.kicks import kick_for
from config.settings import Settings
from config.wiring import sweeper_for
from tasks import per_process, poller_service
from worker.sweeps import LEASE_S, Sweeper


def _build(settings: Settings) -> Sweeper:
    return sweeper_for(settings, kick=kick_for(settings), deliver=kick_for(settings, deliver=True),
                       poller=poller_service())


_sweeper = per_process(_build)


@shared_task(name=SWEEP_TASK, ignore_result=True, time_limit=LEASE_S, soft_time_limit=LEASE_S - 30)
def sweep_due() -> list[dict[str, Any]]:
    """Run every sweep that is due (POLLER_<P>__SWEEP_SECONDS)."""
    return [{"provider": r.provider, "account": r.account, "outcome": r.outcome, "pages": r.pages, **r.entries}
            for r in _sweeper().run_due()]
