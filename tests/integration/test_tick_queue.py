"""Issue 12: the ticks never wait behind the poll chunks they dispatch."""

from __future__ import annotations

import redis

from config.celery_app import DELIVER_DUE_TASK, DELIVER_TASK, DISPATCH_TASK, POLL_TASK, TICKS_QUEUE, create_app
from config.settings import Settings
from worker.http_transport import new_session
from worker.providers.base import HttpClient, HttpOptions


def test_ticks_and_chunks_land_in_their_own_queue_once(broker_url, tmp_path):
    """Sent through the real broker, each tick is in the ticks queue only and each chunk or
    delivery in the default queue only (two queues bound with one key would get both)."""
    app = create_app(Settings(broker_url=broker_url, home=tmp_path))
    for name in (DISPATCH_TASK, DELIVER_DUE_TASK, POLL_TASK, DELIVER_TASK):
        app.send_task(name)
    client = redis.Redis.from_url(broker_url)
    try:
        assert client.llen(TICKS_QUEUE) == 2
        assert client.llen("celery") == 2
    finally:
        client.close()
        app.close()


def test_a_worker_consumes_both_queues(tmp_path):
    """Without -Q a worker takes from every queue the app declares: ticks included."""
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0", home=tmp_path))
    assert {q.name for q in app.conf.task_queues} == {TICKS_QUEUE, "celery"}
    assert len({q.routing_key for q in app.conf.task_queues}) == 2


def test_proxies_in_the_environment_keep_requests_per_call_work(monkeypatch):
    """A proxy (with NO_PROXY per URL) needs requests' environment handling; otherwise the calls
    skip it, and a CA bundle named in the environment is still the one verified against."""
    from config.wiring import http_environment

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert http_environment() == {"trust_env": False, "ca_bundle": "/etc/ssl/certs/ca-certificates.crt"}
    direct = HttpClient("billit", "https://x.test", HttpOptions(**http_environment()))
    assert direct._direct and direct.session.verify == "/etc/ssl/certs/ca-certificates.crt"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert http_environment() == {"trust_env": True}
    assert not HttpClient("billit", "https://x.test", HttpOptions(**http_environment()))._direct
    assert not HttpClient("billit", "https://x.test", session=new_session())._direct  # an injected session
