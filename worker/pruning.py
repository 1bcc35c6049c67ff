"""The prune as a service: `poller prune` and beat's daily task both call this."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.clock import utcnow
from worker.retention import Retention
from worker.status import record_heartbeat
from worker.store.prune import Pruner

log = structlog.get_logger(__name__)


class RetentionService:
    """Removes history older than the retention settings, in short batches."""

    def __init__(self, sessions: sessionmaker[Session], retention: Retention, *,
                 clock: Callable[[], datetime] = utcnow, batch: int = 1000,
                 reads: sessionmaker[Session] | None = None) -> None:
        self.sessions, self.retention, self.clock = sessions, retention, clock
        self.pruner = Pruner(sessions, clock=clock, batch=batch, progress=metrics.pruned, reads=reads)

    def plan(self) -> dict[str, int]:
        """Rows a prune now would remove, per table (nothing is removed)."""
        return self.pruner.count(self.retention.cutoffs(self.clock()))

    def prune(self) -> dict[str, int]:
        """Remove what retention allows; returns the rows removed per table."""
        started = time.monotonic()
        removed = self.pruner.run(self.retention.cutoffs(self.clock()))
        seconds = round(time.monotonic() - started, 3)
        # A prune that stops running (beat's schedule lost, a task that fails every night) shows as
        # a growing poller_prune_last_run_age_seconds, not only as a log line that never comes.
        with self.sessions.begin() as s:
            record_heartbeat(s, "prune", at=self.clock(), seconds=seconds, claimed=sum(removed.values()))
        log.info("prune.done", seconds=seconds, **removed)
        return removed
