"""The prune as a service: `poller prune` and beat's daily task both call this."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.providers.base import utcnow
from worker.retention import Retention
from worker.store.prune import Pruner

log = structlog.get_logger(__name__)


class RetentionService:
    """Removes history older than the retention settings, in short batches."""

    def __init__(self, sessions: sessionmaker[Session], retention: Retention, *,
                 clock: Callable[[], datetime] = utcnow, batch: int = 1000) -> None:
        self.retention, self.clock = retention, clock
        self.pruner = Pruner(sessions, clock=clock, batch=batch, progress=metrics.pruned)

    def plan(self) -> dict[str, int]:
        """Rows a prune now would remove, per table (nothing is removed)."""
        return self.pruner.count(self.retention.cutoffs(self.clock()))

    def prune(self) -> dict[str, int]:
        """Remove what retention allows; returns the rows removed per table."""
        started = time.monotonic()
        removed = self.pruner.run(self.retention.cutoffs(self.clock()))
        log.info("prune.done", seconds=round(time.monotonic() - started, 3), **removed)
        return removed
