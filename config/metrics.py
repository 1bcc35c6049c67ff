"""The /metrics endpoint of `poller worker` and `poller beat`.

Celery's prefork pool runs tasks in child processes, so counters live in prometheus-client's
multi-process files (one directory per worker, set before any metric exists) and the parent
serves their sum. State gauges come from the database at scrape time.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog

from config.settings import Settings

log = structlog.get_logger(__name__)

#: `poller run`'s restart counts, under POLLER_HOME. A file, not a multi-process metric: the
#: worker's multi-process directory is per pid and starts empty, so it would lose the count of
#: the very restart that made it.
RESTARTS_FILE = "restarts.json"


def prepare(settings: Settings, role: str) -> None:
    """Point prometheus-client at a fresh multi-process directory. Call before anything imports it."""
    if not settings.metrics_port_for(role):
        return
    path = (settings.home / "metrics" / f"{role}-{os.getpid()}").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def serve(settings: Settings, role: str) -> None:
    """Serve /metrics on this role's port; a port already taken is logged, not fatal."""
    port = settings.metrics_port_for(role)
    if not port:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from config.wiring import guard_for, providers_for, sessions_for
    from worker.capacity import limits_of
    from worker.metrics_state import StateCollector

    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    guard = guard_for(settings)
    registry.register(StateCollector(sessions_for(settings, read_only=True), settings.tick_seconds,
                                     redis=guard.client if guard else None,
                                     limit_of=limits_of(providers_for(settings))))
    if role == "worker":
        registry.register(RestartsCollector(settings.home))
    try:
        start_http_server(port, addr=settings.metrics_addr, registry=registry)
    except OSError as err:
        log.error("metrics.unavailable", port=port, error=str(err))
        return
    log.info("metrics.serving", role=role, port=port)


def child_exited(pid: int) -> None:
    """Forget a dead pool process's live gauges (its counters stay summed)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def forget(home: Path, role: str, pid: int) -> None:
    """Remove the multi-process directory of a dead ``poller worker|beat`` (its counters end with it)."""
    shutil.rmtree(home / "metrics" / f"{role}-{pid}", ignore_errors=True)


def record_restarts(home: Path, counts: Mapping[str, int]) -> None:
    """Publish `poller run`'s restart counts (process name -> restarts) for the worker's /metrics."""
    path = home / RESTARTS_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(counts)))
    os.replace(tmp, path)  # a scrape reads the old counts or the new ones, never half a file


class RestartsCollector:
    """``poller_restarts_total{process}`` from RESTARTS_FILE; nothing when no `poller run` wrote it."""

    def __init__(self, home: Path) -> None:
        self.path = home / RESTARTS_FILE

    def collect(self) -> Iterator[Any]:
        """One counter family, read at scrape time."""
        from prometheus_client.core import CounterMetricFamily

        try:
            counts = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        family = CounterMetricFamily("poller_restarts", "Children of `poller run` restarted after they died",
                                     labels=["process"])
        for name, count in sorted(counts.items()):
            family.add_metric([name], count)
        yield family
