"""The Redis broker transport Celery uses: kombu's, with one reconnect race closed.

When the broker connection drops while a BRPOP is outstanding, Celery first collects the
connection (which detaches kombu's transport from it; the channel's close fails on the dead
socket and is skipped) and then closes it. The channel's second close wants a fresh connection
pool to hand back its unacknowledged messages, and kombu 5.7 builds that pool from the detached
transport: ``AttributeError: 'NoneType' object has no attribute 'hostname'``. Celery calls that
an unrecoverable error and the worker stops consuming for good, while beat, alive, goes on
queueing ticks (seen in the fault suite's Redis outage about one run in six).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

#: What ``broker_transport`` names for ``redis://`` and ``rediss://`` broker URLs.
TRANSPORT = "config.broker:Transport"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, whose pool refuses with a connection error once detached."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # A connection error is what this is, and the close path ignores exactly those: the worker
        # reconnects. The unacknowledged messages stay in Redis's unacked set until a worker
        # restores them; their work is not lost either way, since the dispatch tick re-sends every
        # due item from the database once its lease ends.
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection is already closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above."""

    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """The transport to force for ``broker_url``: ours for Redis URLs, kombu's choice otherwise."""
    scheme = broker_url.split("://", 1)[0].lower()
    return TRANSPORT if scheme in ("redis", "rediss") else None
