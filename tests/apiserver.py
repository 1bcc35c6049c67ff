"""The HTTP API served by a real uvicorn on a loopback socket, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
from typing import Any

import requests
import uvicorn


class ApiServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port), stopped by ``stop()``."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        started = threading.Event()
        # uvicorn sets `started` once it listens; wait on it without sleeping blindly.
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            started.wait(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class Client:
    """requests against the API with a key, and the base URL filled in."""

    def __init__(self, base: str, key: str | None) -> None:
        self.base, self.session = base, requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.session, method)
        return lambda path, **kw: call(self.base + path, timeout=kw.pop("timeout", 30), **kw)
