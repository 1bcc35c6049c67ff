"""Prometheus metrics: state gauges from the database, and counters summed across Celery's prefork
processes of a real worker."""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from cli.embedded import free_port
from tests.daemons import start_daemon, tail_log, wait_for
from tests.rows import update_items
from worker.metrics_state import StateCollector
from worker.store import repo
from worker.store.db import make_sessionmaker
from worker.store.deliveries import add_subscription, enqueue_deliveries
from worker.store.models import Event, Item


def samples(text: str) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value}."""
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def test_state_gauges_from_the_database(engine, clock):
    """Items by state, overdue count and age, failing items, pending deliveries and their age,
    subscriptions: all as the database says."""
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        for n in range(5):
            repo.add_item(s, provider="billit", account="default", kind="order", ref=str(n), interval_s=60,
                          now=clock() - timedelta(seconds=100))
        repo.add_item(s, provider="amili_ada", account="default", kind="case", ref="c", interval_s=60, now=clock())
        update_items(s, Item.id == 1, state="terminal", next_poll_at=None)
        s.execute(update(Item).where(Item.id == 2).values(consecutive_failures=6, failing=True))
        s.execute(update(Item).where(Item.id == 3).values(consecutive_failures=2))
        add_subscription(s, kind="webhook", url="https://x.example/h", secret="whsec_x", event_types=None,
                         providers=None, now=clock())
        ev = Event(id="evt_1", item_id=2, seq=1, type="status.observed", data={"provider": "billit"},
                   created_at=clock() - timedelta(seconds=42))
        s.add(ev)
        s.flush()
        enqueue_deliveries(s, [ev], now=clock() - timedelta(seconds=42))
    registry = CollectorRegistry()
    registry.register(StateCollector(sessions, tick_s=5, clock=clock))
    got = samples(generate_latest(registry).decode())
    assert got["poller_items"] == {(("provider", "billit"), ("state", "active")): 4,
                                   (("provider", "billit"), ("state", "terminal")): 1,
                                   (("provider", "amili_ada"), ("state", "active")): 1}
    assert got["poller_items_overdue"] == {(("provider", "billit"),): 4}
    assert got["poller_items_overdue_max_age_seconds"][()] == 100
    assert got["poller_items_failing"] == {(("provider", "billit"),): 1}
    assert got["poller_items_consecutive_failures"] == {(("provider", "billit"),): 8}
    assert got["poller_deliveries_pending"] == {(("kind", "webhook"),): 1}
    assert got["poller_deliveries_oldest_pending_age_seconds"][()] == 42
    assert got["poller_subscriptions"] == {(("kind", "webhook"), ("state", "active")): 1}
    assert list(got["poller_build_info"].values()) == [1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return samples(resp.read().decode())


def test_counters_add_up_across_prefork_processes(daemon_env, service, sim, tmp_path):  # noqa: F811
    """A worker with two pool processes and beat serve /metrics; the poll and event counters
    equal what the database holds, so no process's counts are lost."""
    worker_port, beat_port = free_port(), free_port()
    daemon_env.update({"POLLER_METRICS_PORT": str(worker_port), "POLLER_BEAT_METRICS_PORT": str(beat_port),
                       "POLLER_WORKER_CONCURRENCY": "2"})
    daemon = start_daemon(daemon_env, tmp_path / "run.log")
    try:
        for ref in (1001, 1002, 1003):
            sim.billit.create_order(ref)
            service.track("billit", str(ref), interval_s=0.3)
        for stage in range(5):
            wait_for(f"stage {stage}", lambda n=stage: len(service.events_after(0)) >= 3 * (n + 1) or None,
                     proc=daemon.proc, log=daemon.log)
            sim.clock.advance(10)
        wait_for("terminal", lambda: all(i.state == "terminal" for i in service.items()) or None,
                 proc=daemon.proc, log=daemon.log)
        got = scrape(worker_port)
        beat = scrape(beat_port)
    finally:
        assert daemon.interrupt() == 0, tail_log(daemon.log)
    events = service.events_after(0)
    by_type: dict[str, int] = defaultdict(int)
    for e in events:
        by_type[e.type] += 1
    assert {dict(k)["type"]: v for k, v in got["poller_events_total"].items()} == by_type
    polls = {dict(k)["outcome"]: v for k, v in got["poller_polls_total"].items()}
    assert polls["changed"] == len(events)
    assert got["poller_poll_duration_seconds_count"][(("provider", "billit"),)] == sum(
        v for o, v in polls.items() if o not in ("deferred",))
    assert got["poller_items"][(("provider", "billit"), ("state", "terminal"))] == 3
    assert sum(got["poller_dispatch_duration_seconds_count"].values()) > 0
    assert beat["poller_items"] == got["poller_items"] and beat["poller_build_info"]
    for name in got:  # Prometheus naming: a single prefix, no per-item labels
        assert name.startswith("poller_"), name
        assert not any(label in ("item_id", "ref") for key in got[name] for label, _ in key)

