"""The simulator process: one loopback HTTP server routing to every fake provider.

Real HTTP (not a mocked transport) so the poller's timeouts, keep-alive and
error handling are exercised exactly as against the real providers.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from simulator.admin import register_admin_routes
from simulator.amili_ada import FakeAmiliAda
from simulator.amili_arm import FakeAmiliArm
from simulator.amili_collection import FakeAmiliCollection
from simulator.amili_distribution import FakeAmiliDistribution
from simulator.billit import FakeBillit
from simulator.clock import SimClock
from simulator.config import SimulatorConfig
from simulator.fake import FakeProvider
from simulator.faults import FaultPlan
from simulator.push_sources import attach_pushes
from simulator.router import Request, Response, Router, json_response

__all__ = ["FAKES", "Simulator", "SimulatorConfig"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
# Idle keep-alive connections are dropped after this, so handler threads don't pile up.
IDLE_CONNECTION_TIMEOUT = 60.0


#: Every fake, in the order they are served and described.
FAKES: tuple[type[FakeProvider[Any]], ...] = (
    FakeBillit,
    FakeAmiliDistribution,
    FakeAmiliCollection,
    FakeAmiliAda,
    FakeAmiliArm,
)

# Seeded orders alternate so the demo shows both a happy and an unhappy life.
_SEED_SCENARIOS = ("paid", "refused")


class Simulator:
    """Fake provider APIs on loopback, with a shared clock, faults and an admin API."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock = SimClock(self.config.speed)
        self.faults = FaultPlan()
        # Set on stop() so "slow" faults stop sleeping instead of holding shutdown.
        self._stopping = threading.Event()
        self.providers: dict[str, FakeProvider[Any]] = {
            fake.name: fake(self.clock, self.faults, self.config, self._stopping.wait) for fake in FAKES
        }
        self.billit: FakeBillit = self.providers[FakeBillit.name]  # type: ignore[assignment]
        self.router = Router()
        for provider in self.providers.values():
            provider.register(self.router)
        register_admin_routes(self.router, self)
        self.pusher, self.billit_webhooks, self.amili_pushes = attach_pushes(self)

        for index in range(self.config.seed_orders):
            self.billit.create_order(scenario=_SEED_SCENARIOS[index % len(_SEED_SCENARIOS)])

        self._stats_lock = threading.Lock()
        self._requests: dict[str, dict[str, int]] = {}
        #: (monotonic time, label, "METHOD /path") of every request, for tests of timing.
        self.request_log: list[tuple[float, str, str]] = []
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------

    def start(self) -> Simulator:
        """Serve in a daemon thread and return self (so ``with Simulator(c).start() as s`` works)."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        httpd = self._ensure_bound()
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="simulator-http", daemon=True
        )
        self._thread.start()
        self.pusher.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the foreground until KeyboardInterrupt, then shut down cleanly."""
        if self._thread is not None:
            raise RuntimeError("simulator already serving in a background thread")
        httpd = self._ensure_bound()
        self.pusher.start()
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving, drop open connections and release the port. Safe to call twice."""
        self._stopping.set()
        self.pusher.stop()
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._close()

    def __enter__(self) -> Simulator:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- introspection ----------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # sim.amili_collection etc.: each fake provider by its name.
        providers = self.__dict__.get("providers", {})
        if name in providers:
            return providers[name]
        raise AttributeError(name)

    @property
    def port(self) -> int:
        """The bound port (the configured one until started)."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        if self.config.port == 0:
            raise RuntimeError("port 0 means 'pick a free port'; it is known only after start()")
        return self.config.port

    @property
    def url(self) -> str:
        """Base URL clients use, e.g. ``http://127.0.0.1:8900``."""
        host = self.config.host if self.config.host not in ("", "0.0.0.0") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        """All poller settings that point it at this simulator."""
        env: dict[str, str] = {}
        for provider in self.providers.values():
            env.update(provider.env(self.url))
        return env

    def describe(self) -> str:
        """Human text: where it listens, the fake data, and the env lines to export."""
        lines = [
            f"Provider simulator listening on {self.url} "
            f"(clock speed {self.clock.speed:g}x, sim time {self.clock.now():.1f}s)",
            "",
        ]
        for provider in self.providers.values():
            lines.extend(provider.describe_lines())
            lines.append("")
        lines.append("Point the poller at it:")
        lines.extend(f"  export {key}={value}" for key, value in self.env().items())
        lines.append("")
        lines.append(f"Admin API: {self.url}/_sim/health (clock, faults, orders, stats under /_sim/)")
        return "\n".join(lines)

    def stats(self) -> dict[str, Any]:
        """Request counts per provider and path, and TCP connections accepted."""
        httpd = self._httpd
        with self._stats_lock:
            requests = {
                label: {"total": sum(paths.values()), "paths": dict(sorted(paths.items()))}
                for label, paths in sorted(self._requests.items())
            }
        return {
            "connections": httpd.connections_accepted if httpd else 0,
            "open_connections": httpd.open_connections() if httpd else 0,
            "requests": requests,
        }

    # ---- internals --------------------------------------------------------------

    def dispatch(self, request: Request) -> Response:
        """Route one request and count it; never raises."""
        try:
            label, response = self.router.dispatch(request)
        except Exception as exc:  # a simulator bug must not look like a dropped connection
            logger.exception("simulator handler failed for %s %s", request.method, request.path)
            label, response = "unrouted", json_response(500, {"error": f"simulator bug: {exc!r}"})
        with self._stats_lock:
            paths = self._requests.setdefault(label, {})
            key = f"{request.method} {request.path}"
            paths[key] = paths.get(key, 0) + 1
            self.request_log.append((time.monotonic(), label, key))
        return response

    def bind(self) -> Simulator:
        """Reserve the port without serving yet, so ``url``/``describe()`` work with port 0."""
        self._ensure_bound()
        return self

    def _ensure_bound(self) -> _HTTPServer:
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _HTTPServer((self.config.host, self.config.port), _Handler, self)
        return self._httpd

    def _close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.close_connections()
            httpd.server_close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], sim: Simulator):
        self.simulator = sim
        self.connections_accepted = 0
        self._conn_lock = threading.Lock()
        self._open: set[socket.socket] = set()
        # socketserver's own loop only notices shutdown() at its next poll tick;
        # a wake-up socket makes stop() immediate, which keeps test teardown fast.
        self._stop_requested = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(address, handler)
        except OSError:
            # A busy port: the caller reports it; the wake-up pair must not leak.
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop_requested.is_set():
                for key, _ in selector.select(poll_interval):
                    if key.fileobj is self and not self._stop_requested.is_set():
                        self._handle_request_noblock()
                self.service_actions()

    def shutdown(self) -> None:
        """Ask the serving loop to exit; the caller joins the serving thread."""
        self._stop_requested.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self.connections_accepted += 1
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def open_connections(self) -> int:
        with self._conn_lock:
            return len(self._open)

    def close_connections(self) -> None:
        # Handler threads block reading the next keep-alive request; shutting the
        # socket wakes them so stop() really ends the conversation.
        with self._conn_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, the "slow" fault) are expected, not noise.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "provider-simulator/1"
    timeout = IDLE_CONNECTION_TIMEOUT
    server: _HTTPServer

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True
            self._write(json_response(400, {"error": str(exc)}))
            return
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers if isinstance(self.headers, Message) else Message(),
            body=body,
        )
        self._write(self.server.simulator.dispatch(request))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if not raw_length:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise ValueError(f"bad Content-Length {raw_length!r}") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise ValueError(f"Content-Length {length} out of range (max {MAX_BODY_BYTES})")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError("bad chunk size in chunked body") from None
            if size == 0:
                # Skip trailers up to the blank line that ends the body.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError(f"chunked body larger than {MAX_BODY_BYTES} bytes")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _write(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Per-request lines on stderr would drown the poller's own output.
        logger.debug("%s " + format, self.address_string(), *args)
