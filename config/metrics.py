"""The /metrics endpoint of `poller worker` and `poller beat`.

Celery's prefork pool runs tasks in child processes, so counters live in prometheus-client's
multi-process files (one directory per worker, set before any metric exists) and the parent
serves their sum. State gauges come from the database at scrape time.
"""

from __future__ import annotations

import os
import shutil

import structlog

from config.settings import Settings

log = structlog.get_logger(__name__)


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

    from config.wiring import guard_for, sessions_for
    from worker.metrics_state import StateCollector

    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    guard = guard_for(settings)
    registry.register(StateCollector(sessions_for(settings), settings.tick_seconds,
                                     redis=guard.client if guard else None))
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
