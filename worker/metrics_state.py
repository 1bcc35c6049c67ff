"""Gauges read from the database (and Redis) at scrape time: items by state, overdue polls,
pending deliveries, subscriptions, circuit breakers. Correct however many processes run, since
the source of truth is shared."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.capacity import LimitOf, needs_of
from worker.clock import utcnow
from worker.guard import KEY_PREFIX
from worker.status import STUCK_AFTER_CLAIMS, age_seconds
from worker.store import health, tallies
from worker.store.models import Heartbeat, Subscription
from worker.store.stream import oldest_event_at

VERSION = "0.1.0"


class StateCollector:
    """A prometheus-client collector over the poller's database.

    Args:
        sessions: the poller database.
        tick_s: an item due more than one tick ago counts as overdue.
        redis: the guard's Redis client, for circuit-breaker state (optional).
        clock: wall clock.
        limit_of: each provider account's rate limit (for the capacity gauges).
    """

    def __init__(self, sessions: sessionmaker[Session], tick_s: float, redis: Any = None,
                 clock: Callable[[], datetime] = utcnow, limit_of: LimitOf = lambda provider, account: None) -> None:
        self.sessions, self.tick_s, self.redis, self.clock = sessions, tick_s, redis, clock
        self.limit_of = limit_of

    def collect(self) -> Iterator[Any]:
        """Yield the metric families (called by prometheus-client on each scrape)."""
        from prometheus_client.core import GaugeMetricFamily

        now = self.clock()
        info = GaugeMetricFamily("poller_build_info", "Build information.", labels=["version", "python"])
        info.add_metric([VERSION, platform.python_version()], 1)
        yield info
        with self.sessions.begin() as s:
            items = GaugeMetricFamily("poller_items", "Tracked items, by provider and state.",
                                      labels=["provider", "state"])
            counts = tallies.item_counts(s)
            for provider, by in sorted(tallies.items_by_provider(counts).items()):
                for state, n in sorted(by.items()):
                    items.add_metric([provider, state], n)
            yield items
            overdue = GaugeMetricFamily("poller_items_overdue", "Active items due more than one tick ago.",
                                        labels=["provider"])
            late = health.overdue(s, now - timedelta(seconds=self.tick_s))
            for provider, (n, _) in late.items():
                overdue.add_metric([provider], n)
            yield overdue
            yield GaugeMetricFamily("poller_items_overdue_max_age_seconds",
                                    "How long the most overdue item has been due.",
                                    value=age_seconds(now, health.earliest([first for _, first in late.values()])))
            failing = GaugeMetricFamily("poller_items_failing", "Items past POLLER_FAILING_AFTER failures.",
                                        labels=["provider"])
            failures = GaugeMetricFamily("poller_items_consecutive_failures",
                                         "Sum of consecutive failures over items now failing to poll.",
                                         labels=["provider"])
            for provider, failed in health.failures(s).items():
                failing.add_metric([provider], failed.failing)
                failures.add_metric([provider], failed.failures)
            yield failing
            yield failures
            stuck = GaugeMetricFamily("poller_items_stuck", f"Active items claimed in {STUCK_AFTER_CLAIMS} or more "
                                      "leases in a row without a completed poll.", labels=["provider"])
            for provider, n in health.stuck(s).items():
                stuck.add_metric([provider], n)
            yield stuck
            auth = GaugeMetricFamily("poller_provider_auth_failed",
                                     "1 while a provider account's credentials or settings are refused.",
                                     labels=["provider", "account"])
            for provider, account, _ in health.auth_failures(s):
                auth.add_metric([provider, account], 1)
            yield auth
            required = GaugeMetricFamily("poller_required_polls_per_second",
                                         "Polls per second the active items need (sum of 1/interval), "
                                         "by provider account.", labels=["provider", "account"])
            limits = GaugeMetricFamily("poller_rate_limit_per_second",
                                       "The provider account's rate limit, where it has one.",
                                       labels=["provider", "account"])
            for need in needs_of(counts, self.limit_of):
                required.add_metric([need.provider, need.account], need.required_per_s)
                if need.limit_per_s is not None:
                    limits.add_metric([need.provider, need.account], need.limit_per_s)
            yield required
            yield limits
            pending = GaugeMetricFamily("poller_deliveries_pending", "Deliveries not yet delivered or failed.",
                                        labels=["kind"])
            kinds: dict[int, str] = {sub_id: kind for sub_id, kind in
                                     s.execute(select(Subscription.id, Subscription.kind))}
            by_kind: dict[str, int] = {}
            for sub_id, by in tallies.delivery_counts(s).items():
                if by.get("pending") and sub_id in kinds:
                    by_kind[kinds[sub_id]] = by_kind.get(kinds[sub_id], 0) + by["pending"]
            for kind, n in sorted(by_kind.items()):
                pending.add_metric([kind], n)
            yield pending
            yield GaugeMetricFamily("poller_deliveries_oldest_pending_age_seconds",
                                    "Age of the oldest delivery still pending.",
                                    value=age_seconds(now, health.oldest_pending_delivery(s)))
            oldest_event = oldest_event_at(s)
            yield GaugeMetricFamily("poller_events_oldest_age_seconds",
                                    "Age of the oldest retained event (retention: POLLER_RETENTION_EVENTS).",
                                    value=age_seconds(now, oldest_event))
            tick = s.get(Heartbeat, "dispatch")
            yield GaugeMetricFamily("poller_dispatch_last_tick_age_seconds",
                                    "Seconds since the last dispatch tick ran (beat, broker and a worker).",
                                    value=(now - tick.at).total_seconds() if tick else float("inf"))
            pruned = s.get(Heartbeat, "prune")
            yield GaugeMetricFamily("poller_prune_last_run_age_seconds",
                                    "Seconds since a prune last finished (beat runs one daily at POLLER_PRUNE_AT); "
                                    "+Inf before the first.",
                                    value=(now - pruned.at).total_seconds() if pruned else float("inf"))
            swept = GaugeMetricFamily("poller_sweep_last_success_age_seconds",
                                      "Seconds since a provider account's incremental sweep last read its whole "
                                      "change list; +Inf before the first.", labels=["provider", "account"])
            failing = GaugeMetricFamily("poller_sweep_consecutive_failures",
                                        "Sweeps of a provider account failed in a row.", labels=["provider", "account"])
            degraded = GaugeMetricFamily("poller_sweep_degraded",
                                         "1 while a provider account's sweeps are degraded (provider.degraded: its "
                                         "items are polled at their own intervals, not the reconciliation one).",
                                         labels=["provider", "account"])
            for row in health.sweeps(s):
                swept.add_metric([row.provider, row.account],
                                 (now - row.ok_at).total_seconds() if row.ok_at else float("inf"))
                failing.add_metric([row.provider, row.account], row.failures)
                degraded.add_metric([row.provider, row.account], 1 if row.degraded_at else 0)
            yield swept
            yield failing
            yield degraded
            subs = GaugeMetricFamily("poller_subscriptions", "Subscriptions, by kind and state.",
                                     labels=["kind", "state"])
            for (kind, state), n in health.subscription_counts(s).items():
                subs.add_metric([kind, state], n)
            yield subs
        if self.redis is not None:
            yield self._breakers()

    def _breakers(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("poller_circuit_breaker_open", "1 while a provider account is paused.",
                                   labels=["provider", "account"])
        try:
            for key in self.redis.scan_iter(match=f"{KEY_PREFIX}*:breaker", count=100):
                name = key.decode() if isinstance(key, bytes) else key
                provider, account = name[len(KEY_PREFIX):].rsplit(":", 2)[:2]
                state = self.redis.hget(name, "state")
                family.add_metric([provider, account], 1.0 if state in (b"open", "open") else 0.0)
        except Exception:  # noqa: BLE001, S110 - a Redis hiccup must not fail the whole scrape
            pass
        return family
