"""HTTP calls with a total deadline, over connections pinned to the addresses that were checked.

requests' ``timeout`` bounds each socket operation, not the call: a peer that sends one byte every
few seconds (in the headers or the body) is never cut off. Here every call runs under a
:class:`Call` with a deadline; its connections register their sockets with it, and one watchdog
thread shuts those sockets down when the deadline passes. That unblocks whatever read is waiting,
and the caller sees ``call.expired`` and reports an ordinary, retryable timeout.

A call may also pin host names to addresses (``pins``): the connection then goes to an address
the SSRF check accepted instead of resolving the name again, which would let DNS answer
differently the second time (rebinding). The Host header, TLS SNI and certificate check still use
the name.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError
from urllib3.poolmanager import PoolManager

#: Host names pinned to addresses, keyed by ``(lowercase host without brackets or final dot, port)``.
Pins = Mapping[tuple[str, int], Sequence[str]]


def pin_key(host: str, port: int) -> tuple[str, int]:
    """The key a host and port are pinned under (IPv6 brackets, case and a final dot ignored)."""
    return host.strip("[]").rstrip(".").lower(), port


class Call:
    """One HTTP call's deadline, its pinned addresses and the sockets it is using."""

    def __init__(self, seconds: float, pins: Pins | None = None) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.pins = {pin_key(host, port): tuple(addresses) for (host, port), addresses in (pins or {}).items()}
        #: Set by the watchdog when the deadline passed while the call was still running.
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._done = False

    def remaining(self) -> float:
        """Seconds left (a small positive floor, so it can always be passed as a socket timeout)."""
        return max(self.deadline - time.monotonic(), 0.001)

    def pinned(self, host: str, port: int) -> tuple[str, ...]:
        """The checked addresses for ``host:port``; empty when it is not pinned."""
        return tuple(self.pins.get(pin_key(host, port), ()))

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` off when the deadline passes (at once if it already has)."""
        with self._lock:
            if self._done:
                return
            if self.expired:
                _shutdown(sock)
                return
            self._sockets.append(sock)

    def expire(self) -> None:
        """The deadline passed: shut the call's sockets down, unless it already finished."""
        # Under the lock: once finish() ran, a socket may be back in the pool serving another call.
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)
            self._sockets.clear()

    def finish(self) -> None:
        """The call is over; its sockets are no longer ours to cut."""
        with self._lock:
            self._done = True
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    # shutdown() (not close()) wakes a thread blocked in recv() on this socket; the owner closes it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires calls whose deadline passed, earliest first."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Call]] = []
        self._seq = itertools.count()
        self._pid: int | None = None

    def add(self, call: Call) -> None:
        with self._cond:
            if self._pid != os.getpid():
                # First use in this process (threads do not survive a fork of a worker pool).
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="http-deadlines", daemon=True).start()
            heapq.heappush(self._heap, (call.deadline, next(self._seq), call))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                due: list[Call] = []
                while not due:
                    now = time.monotonic()
                    while self._heap and self._heap[0][0] <= now:
                        due.append(heapq.heappop(self._heap)[2])
                    if not due:
                        self._cond.wait(self._heap[0][0] - now if self._heap else None)
            for call in due:
                call.expire()


_WATCHDOG = _Watchdog()
# A child forked while the watchdog held its lock would wait on it forever: start afresh instead.
os.register_at_fork(after_in_child=_WATCHDOG._reset)

_CURRENT: contextvars.ContextVar[Call | None] = contextvars.ContextVar("http_call", default=None)


@contextlib.contextmanager
def deadline(seconds: float, *, pins: Pins | None = None) -> Iterator[Call]:
    """Run the HTTP calls inside the block under one total deadline of ``seconds``.

    Only sessions from :func:`new_session` honour it. After the block's request fails (or its body
    ends early), ``call.expired`` tells whether the deadline was the cause.
    """
    call = Call(seconds, pins)
    _WATCHDOG.add(call)
    token = _CURRENT.set(call)
    try:
        yield call
    finally:
        _CURRENT.reset(token)
        call.finish()


class _CallHTTPConnection(HTTPConnection):
    """Registers its socket with the current call, and connects to the call's pinned addresses."""

    def _new_conn(self) -> socket.socket:
        call = _CURRENT.get()
        addresses = call.pinned(self.host, self.port) if call is not None else ()
        sock = self._connect_pinned(call, addresses) if addresses else super()._new_conn()
        if call is not None:
            call.watch(sock)
        return sock

    def _connect_pinned(self, call: Call | None, addresses: tuple[str, ...]) -> socket.socket:
        # urllib3 resolves _dns_host; everything else (Host header, SNI, certificate) uses host,
        # so swapping the former for a checked address connects there and changes nothing else.
        name, error = self._dns_host, None
        try:
            for address in addresses:
                if call is not None and call.expired:
                    break
                self._dns_host = address
                try:
                    return super()._new_conn()
                except ConnectTimeoutError as err:  # NewConnectionError too: try the next address
                    error = err
        finally:
            self._dns_host = name
        raise error or ConnectTimeoutError(self, f"Connection to {self.host} ran out of time")

    def request(self, *args: Any, **kwargs: Any) -> None:
        call = _CURRENT.get()
        if call is not None and self.sock is not None:
            call.watch(self.sock)  # a kept-alive connection, connected during an earlier call
        super().request(*args, **kwargs)


class _CallHTTPSConnection(_CallHTTPConnection, HTTPSConnection):
    """The HTTPS variant (TLS on top of the same socket handling)."""


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _CallHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CallHTTPSConnection


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose connections honour :func:`deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The usual pool manager, with our connection classes."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        """The usual proxy manager; HTTP(S) proxies get our connection classes too (SOCKS keeps its own)."""
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


class DirectResponse:
    """A urllib3 response with the parts of ``requests.Response`` our callers read."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.status_code: int = raw.status
        self.headers = raw.headers  # case-insensitive, like requests'
        self._consumed = False

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body (decoded from gzip or deflate), in chunks."""
        yield from self.raw.stream(chunk_size, decode_content=True)
        self._consumed = True

    def __enter__(self) -> DirectResponse:
        return self

    def __exit__(self, *_: object) -> None:
        # As requests does: a body read to its end leaves the connection for the next call;
        # one abandoned half-way is closed, never reused mid-body.
        if not self._consumed:
            self.raw.close()
        self.raw.release_conn()


def direct_request(session: requests.Session, method: str, url: str, *, headers: Mapping[str, str],
                   body: bytes | None, timeout: float) -> DirectResponse | None:
    """Send through ``session``'s connection pools without requests' per-call machinery.

    For a session with ``trust_env`` off (no proxy to choose per URL) and no cookies or auth of
    its own: what requests adds then is preparing, merging and wrapping, a quarter of a poll's
    CPU. The connections are the session's (deadline-aware, pinned, kept alive); verification is
    the session's ``verify``. Raises urllib3's errors (``urllib3.exceptions.HTTPError``) and OSError.
    None when another adapter is mounted for ``url`` (it is then the one to send).
    """
    import urllib3
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    adapter = session.get_adapter(url)
    if not isinstance(adapter, DeadlineAdapter):
        return None
    parsed = urllib3.util.parse_url(url)
    pool_kwargs: dict[str, Any] = {}
    if parsed.scheme == "https":
        verify = session.verify
        pool_kwargs = {"cert_reqs": "CERT_REQUIRED" if verify is not False else "CERT_NONE"}
        if verify is not False:
            pool_kwargs["ca_certs"] = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
    pool = adapter.poolmanager.connection_from_host(parsed.host, parsed.port, parsed.scheme, pool_kwargs=pool_kwargs)
    raw = pool.urlopen(method, parsed.request_uri, body=body, headers={**session.headers, **headers},
                       retries=False, redirect=False, assert_same_host=False, preload_content=False,
                       decode_content=False, timeout=urllib3.Timeout(connect=timeout, read=timeout))
    return DirectResponse(raw)


def new_session(*, pool_connections: int = 10, pool_maxsize: int = 10, trust_env: bool = True,
                ca_bundle: str | None = None) -> requests.Session:
    """A ``requests.Session`` whose calls honour :func:`deadline` (for http and https).

    ``trust_env=False`` skips requests' reading of proxy variables, CA-bundle variables and
    ~/.netrc on every call (a tenth of a poll's CPU); ``ca_bundle`` is then the CA bundle the
    environment named, read once by the caller.
    """
    session = requests.Session()
    session.trust_env = trust_env
    if ca_bundle:
        session.verify = ca_bundle
    adapter = DeadlineAdapter(pool_connections=pool_connections, pool_maxsize=pool_maxsize)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
