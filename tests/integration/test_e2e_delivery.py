"""Delivery through real processes: `poller run`, a Celery worker killed mid-delivery, the SQL sink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import select

from tests.daemons import ROOT, start_daemon, tail_log, wait_for
from worker.store.db import make_engine, sqlite_url
from worker.store.models import Delivery, DeliveryAttempt
from worker.subscriptions import Subscriptions

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(daemon_env, tmp_path):
    daemon_env.update({"POLLER_WEBHOOK_ALLOW_HTTP": "true", "POLLER_WEBHOOK_ALLOW_PRIVATE": "true",
                       "POLLER_DELIVERY_LEASE_SECONDS": "3", "POLLER_WEBHOOK_TIMEOUT_SECONDS": "10",
                       "POLLER_SINK_DATABASE_URL": sqlite_url(tmp_path / "sink.db")})
    return daemon_env


def subscribe(service, receiver) -> None:
    subs = Subscriptions(service.sessions, allow_http=True, allow_private=True, known_providers=("billit",))
    _, secret = subs.add(receiver.url)
    receiver.secrets = [secret]


def test_events_reach_the_receiver_and_the_sink_through_poller_run(env, service, sim, receiver, tmp_path):
    """Two orders' lives, polled and delivered by `poller run`: every event verified, once, in
    order per item, with webhook-id = event id; the sink table has each event once."""
    subscribe(service, receiver)
    daemon = start_daemon(env, tmp_path / "run.log")
    try:
        for ref in (1001, 1002):
            sim.billit.create_order(ref)
            service.track("billit", str(ref), interval_s=0.3)
        for stage in range(5):
            wait_for(f"stage {stage} delivered", lambda n=stage: len(receiver.ok()) >= 2 * (n + 1) or None,
                     proc=daemon.proc, log=daemon.log)
            sim.clock.advance(10)
    finally:
        assert daemon.interrupt() == 0, tail_log(daemon.log)
    events = service.events_after(0)
    assert len(events) == 10
    ok = receiver.ok()
    assert sorted(r.webhook_id for r in ok) == sorted(e.id for e in events)  # each once
    assert all(r.verified_with == [0] for r in ok)
    for item in {e.item_id for e in events}:
        got = [r.json["data"]["status"] for r in ok if r.json["data"]["item_id"] == item]
        assert got == ["to_send", "pending_delivery", "delivered", "received", "paid"]
    sink = make_engine(env["POLLER_SINK_DATABASE_URL"])
    with sink.connect() as conn:
        ids = [row[0] for row in conn.exec_driver_sql("SELECT id FROM poller_events")]
    sink.dispose()
    assert sorted(ids) == sorted(e.id for e in events)


def test_worker_killed_mid_delivery_the_delivery_is_retried_not_lost(env, service, sim, receiver, tmp_path):
    """SIGKILL the worker while the receiver is still answering: after the lease, a new worker
    sends the same event again (same webhook-id) and it is recorded as delivered."""
    env.pop("POLLER_SINK_DATABASE_URL")
    subscribe(service, receiver)
    receiver.plan(200, delay=4.0)  # the first delivery hangs long enough to kill the worker
    logs = tmp_path / "worker.log"

    def spawn(role: str, log_name: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / log_name, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "cli.main", role], env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    env["POLLER_BROKER_URL"] = env.get("POLLER_BROKER_URL") or _broker(tmp_path)
    beat, worker = spawn("beat", "beat.log"), spawn("worker", "worker.log")
    second = None
    try:
        sim.billit.create_order(1001)
        service.track("billit", "1001", interval_s=60)
        wait_for("the first delivery in flight", lambda: receiver.arrivals or None, timeout=30, log=logs)
        assert receiver.received == []  # still waiting for its answer
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        (event,) = service.events_after(0)
        second = spawn("worker", "worker2.log")
        wait_for("the redelivery", lambda: receiver.ok() or None, timeout=30, log=tmp_path / "worker2.log")
        assert set(receiver.arrivals) == {event.id} and len(receiver.arrivals) >= 2  # the same webhook-id again
        engine = make_engine(env["POLLER_DATABASE_URL"])
        with engine.connect() as conn:
            wait_for("recorded", lambda: conn.execute(select(Delivery.state)).scalar() == "succeeded" or None)
            attempts = conn.execute(select(DeliveryAttempt.status_code)).scalars().all()
        engine.dispose()
        assert 200 in attempts
    finally:
        for proc in (p for p in (beat, worker, second) if p is not None):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)


def _broker(tmp_path):
    from cli.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis").start()
    _servers.append(server)
    return server.url


_servers: list = []


@pytest.fixture(autouse=True)
def _stop_brokers():
    yield
    while _servers:
        _servers.pop().stop()
