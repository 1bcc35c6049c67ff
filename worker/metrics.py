"""Counters and histograms that code paths bump (polls, events, deliveries, dispatch ticks).

Created on first use, not at import: prometheus-client picks single- or multi-process storage
when it is first imported, and `poller worker` must set up multi-process mode (Celery's prefork
children) before that. State gauges (items by state, overdue, pending deliveries) are read from
the database at scrape time instead: see worker.metrics_state.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

_lock = threading.Lock()
_metrics: Any = None

#: Poll and delivery latencies, in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _m() -> Any:
    global _metrics
    with _lock:
        if _metrics is None:
            from prometheus_client import Counter, Histogram

            _metrics = SimpleNamespace(
                polls=Counter("poller_polls_total", "Polls, by provider and outcome "
                              "(changed, unchanged, failed, gone, deferred, lost_lease; error: our own fault, "
                              "such as a missing setting).", ["provider", "outcome"]),
                poll_seconds=Histogram("poller_poll_duration_seconds", "Time of one poll: fetch and normalize.",
                                       ["provider"], buckets=LATENCY_BUCKETS),
                events=Counter("poller_events_total", "Events written, by type.", ["type"]),
                deliveries=Counter("poller_deliveries_total", "Delivery attempts, by outcome "
                                   "(success, retry, failed, gone).", ["kind", "outcome"]),
                delivery_seconds=Histogram("poller_delivery_duration_seconds", "Time of one delivery attempt.",
                                           ["kind"], buckets=LATENCY_BUCKETS),
                dispatch_seconds=Histogram("poller_dispatch_duration_seconds",
                                           "One dispatch tick: claim and enqueue.", ["queue"],
                                           buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)),
                subscriptions_disabled=Counter("poller_subscriptions_disabled_total",
                                               "Subscriptions disabled automatically, by reason (gone, failing).",
                                               ["reason"]),
                pruned=Counter("poller_pruned_total", "Rows removed by retention, by table.", ["table"]),
                ingress=Counter("poller_ingress_total", "Provider pushes received, by provider and outcome "
                                "(accepted, untracked, duplicate, or why one was refused).", ["provider", "outcome"]),
                sweeps=Counter("poller_sweeps_total", "Incremental sweeps, by provider and outcome (ok, failed).",
                               ["provider", "outcome"]),
                sweep_entries=Counter("poller_sweep_entries_total", "Entries read by sweeps, by provider and what "
                                      "they led to (due: an active item made due; ignored: untracked or "
                                      "finished; seen: read before).",
                                      ["provider", "outcome"]),
                provider_pauses=Counter("poller_provider_pauses_total", "Circuit-breaker openings, by provider.",
                                        ["provider"]),
            )
        return _metrics


def polls(counts: Mapping[tuple[str, str], int]) -> None:
    """Polls finished: counts by (provider, outcome)."""
    m = _m()
    for (provider, outcome), n in counts.items():
        m.polls.labels(provider, outcome).inc(n)


def poll_seconds(provider: str, seconds: float) -> None:
    """The time one poll took (fetch and normalize)."""
    _m().poll_seconds.labels(provider).observe(seconds)


def events(types: list[str]) -> None:
    """Events were written."""
    m = _m()
    for t in types:
        m.events.labels(t).inc()


def delivery(kind: str, outcome: str, seconds: float) -> None:
    """One delivery attempt was recorded."""
    m = _m()
    m.deliveries.labels(kind, outcome).inc()
    m.delivery_seconds.labels(kind).observe(seconds)


def dispatch(queue: str, seconds: float) -> None:
    """One dispatch tick (``polls`` or ``deliveries``)."""
    _m().dispatch_seconds.labels(queue).observe(seconds)


def subscription_disabled(reason: str) -> None:
    """A subscription was disabled automatically (``gone`` or ``failing``)."""
    _m().subscriptions_disabled.labels(reason).inc()


def provider_paused(provider: str) -> None:
    """A provider's circuit breaker opened."""
    _m().provider_pauses.labels(provider).inc()


def ingress(provider: str, outcome: str) -> None:
    """A provider push was accepted, or refused (``outcome`` says which and why)."""
    _m().ingress.labels(provider, outcome).inc()


def pruned(table: str, n: int) -> None:
    """Rows of ``table`` removed by a prune."""
    _m().pruned.labels(table).inc(n)


def sweep(provider: str, outcome: str, entries: Mapping[str, int]) -> None:
    """One sweep ended (``ok`` or ``failed``), with what its entries led to."""
    m = _m()
    m.sweeps.labels(provider, outcome).inc()
    for what, n in entries.items():
        if n:
            m.sweep_entries.labels(provider, what).inc(n)
