"""The broker transport survives a Redis outage that strikes while a BRPOP is outstanding.

Celery's consumer, on a lost connection, collects the kombu connection and then closes it; this
replays those two calls against a real redis-server SIGKILLed at that moment, with a message
delivered and not yet acknowledged (the fault suite saw the worker stop for good there).
"""

from __future__ import annotations

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue  # type: ignore[attr-defined]

from cli.embedded import EmbeddedRedis, free_port
from config.broker import TRANSPORT, transport_for


@pytest.fixture
def redis_server(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    yield server
    server.stop()


def _consume_one(conn: Connection, channel, name: str) -> None:
    """Deliver one message on ``channel`` and leave it unacknowledged."""
    queue = Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
    Producer(channel).publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
    got: list[object] = []
    Consumer(channel, [queue], callbacks=[lambda body, message: got.append(message)]).consume()
    conn.drain_events(timeout=5)
    assert got, f"no message delivered on {name}"


def _lose_connection_mid_brpop(url: str, transport: str | None) -> Connection:
    """A worker's connection as the outage finds it: the default channel holds an unacknowledged
    message and an outstanding BRPOP, a second channel (opened later, so closed first) holds one
    too."""
    conn = Connection(url, transport=transport)
    default = conn.default_channel
    _consume_one(conn, default, "tasks")
    other = conn.channel()
    _consume_one(conn, other, "other")
    default._brpop_start()  # the BRPOP the event loop keeps outstanding
    return conn


def _celery_cleanup(conn: Connection) -> None:
    """What Celery's consumer does with the connection once it is lost: collect, then close.

    The default channel's close fails on the outstanding BRPOP (a connection error, ignored);
    closing the connection's channels stops at the second channel, whose messages cannot be
    handed back (another connection error, ignored); collecting detaches the transport; the
    close then closes the default channel for real, which builds a pool from the transport.
    """
    conn.collect(socket_timeout=0.5)
    conn.close()


def test_collect_then_close_after_a_kill_raises_nothing(redis_server):
    conn = _lose_connection_mid_brpop(redis_server.url, TRANSPORT)
    redis_server.proc.kill()
    redis_server.proc.wait(10)
    _celery_cleanup(conn)  # kombu's own transport: AttributeError ('NoneType' object has no attribute 'hostname')


def test_the_race_is_real_with_kombus_own_transport(redis_server):
    """The test above fails without our transport: kombu's raises where Celery gives up."""
    conn = _lose_connection_mid_brpop(redis_server.url, None)
    redis_server.proc.kill()
    redis_server.proc.wait(10)
    with pytest.raises(AttributeError, match="hostname"):
        _celery_cleanup(conn)


def test_redis_urls_get_our_transport_and_others_keep_kombus():
    assert transport_for("redis://127.0.0.1:6379/0") == TRANSPORT
    assert transport_for("rediss://h:6380/0") == TRANSPORT
    assert transport_for("sentinel://h:26379") is None
    assert transport_for("memory://") is None
