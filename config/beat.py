"""Celery beat with a leader lease: run two or more `poller beat` for failover; one sends ticks."""

from __future__ import annotations

import contextlib
from typing import Any

import redis
import structlog
from celery.beat import PersistentScheduler

from config.settings import get_settings
from worker.leader import LeaderLease

log = structlog.get_logger(__name__)


class LeaderScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler that sends only while it holds the leader lease.

    The lease lasts two thirds of POLLER_BEAT_FAILOVER_SECONDS and a standby checks every sixth,
    so a dead leader is replaced within the failover time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        failover = get_settings().beat_failover_seconds
        self.check_interval = failover / 6
        self.lease = LeaderLease(redis.Redis.from_url(self.app.conf.broker_url), ttl_s=failover * 2 / 3)
        self.leading: bool | None = None  # unknown until the first tick, which logs the role

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            leading = self.lease.hold()
        except redis.RedisError as err:
            # Without the lease nobody can prove leadership: better no ticks than two schedulers.
            log.error("beat.lease_unavailable", error=type(err).__name__)
            leading = False
        if leading != self.leading:
            self.leading = leading
            (log.warning if leading else log.error)("beat.leader" if leading else "beat.standby")
        if not leading:
            return self.check_interval
        return min(float(super().tick(*args, **kwargs)), self.check_interval)

    def close(self) -> None:
        if self.leading:
            with contextlib.suppress(redis.RedisError):
                self.lease.release()  # hand over now instead of at expiry
        super().close()
