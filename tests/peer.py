"""A small HTTP/1.1 peer over loopback that records every request and can answer as a hostile
server would: one byte at a time, in the headers or in the body.

Written on raw sockets so the timing of every byte is ours (http.server buffers whole answers).
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request as the peer saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What to send back. ``trickle``: "headers" (everything byte by byte), "body" (headers at
    once, then the body byte by byte) or None (all at once)."""

    status: int = 200
    body: Any = None
    trickle: str | None = None
    #: Without a Content-Length the body ends when the connection closes.
    length: bool = True
    #: How many bytes go out one at a time before the rest follows at once (the whole answer would
    #: take minutes; this is enough to outlast any deadline under test).
    slow_bytes: int = 8

    def encode(self) -> tuple[bytes, bytes]:
        body = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        head = f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\n" if self.length else "Connection: close\r\n"
        return (head + "\r\n").encode(), body


class Peer:
    """Serves ``route(request) -> Answer`` on ``host`` (a free port, or ``port``), optionally with TLS.

    Trickled bytes go out every ``interval`` seconds; a trickle stops when the client goes away.
    """

    def __init__(self, route: Callable[[Request], Answer], *, host: str = "127.0.0.1", port: int = 0,
                 interval: float = 0.5, tls: ssl.SSLContext | None = None) -> None:
        self.route, self.interval, self.tls = route, interval, tls
        self.requests: list[Request] = []
        self.server_names: list[str | None] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        peer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                peer._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        if tls is not None:
            tls.sni_callback = self._record_sni

    def _record_sni(self, sock: Any, name: str | None, ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.server_names.append(name)

    def url(self, path: str = "") -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{path}"

    def __enter__(self) -> Peer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                return
        reader = sock.makefile("rb")
        try:
            while not self._stop.is_set():
                request = self._read(reader)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                answer = self.route(request)
                head, body = answer.encode()
                if answer.trickle == "headers":
                    self._trickle(sock, head + body, answer.slow_bytes)
                else:
                    sock.sendall(head)
                    if answer.trickle == "body":
                        self._trickle(sock, body, answer.slow_bytes)
                    else:
                        sock.sendall(body)
                if not answer.length:
                    return
        except OSError:
            return  # the client went away: exactly what a deadline does
        finally:
            reader.close()
            sock.close()

    def _trickle(self, sock: socket.socket, data: bytes, slow: int) -> None:
        for i in range(min(slow, len(data))):
            sock.sendall(data[i:i + 1])
            if self._stop.wait(self.interval):
                raise OSError("peer stopped")
        sock.sendall(data[slow:])

    @staticmethod
    def _read(reader: Any) -> Request | None:
        line = reader.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = reader.read(int(headers.get("content-length", 0) or 0))
        return Request(method, path, headers, body)

