"""One POST to a subscriber, measured and never raising: every outcome becomes an AttemptResult."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from worker.backoff import parse_retry_after
from worker.clock import utcnow
from worker.domain import AttemptResult
from worker.http_transport import deadline, new_session


class WebhookSender:
    """Posts signed payloads over keep-alive connections.

    Args:
        timeout_s: the total time (connect, headers and body) a subscriber gets to answer; slower
            is a failure (Svix Cloud: 15 s).
        excerpt_bytes: how much of each response is kept for the attempt log.
        session: an injected requests session (one from ``worker.http_transport.new_session`` keeps
            the total deadline and address pinning).
        clock: for Retry-After dates.
    """

    def __init__(self, timeout_s: float = 15.0, excerpt_bytes: int = 4096, session: requests.Session | None = None,
                 clock: Callable[[], datetime] = utcnow, pool_size: int = 10) -> None:
        self.timeout_s = timeout_s
        self.excerpt_bytes = excerpt_bytes
        if session is None:
            # One kept-alive connection per sending thread and host.
            session = new_session(pool_connections=16, pool_maxsize=max(pool_size, 10))
            # Proxy settings are read from the environment once here, not on every request
            # (requests' per-request lookup was a third of a delivery's CPU time).
            session.trust_env = False
            session.proxies = {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
        self.session = session
        self.session.headers["User-Agent"] = "status-poller-webhooks/0.1"
        self.clock = clock

    def post(self, url: str, payload: bytes, headers: Mapping[str, str], *,
             addresses: Sequence[str] = ()) -> AttemptResult:
        """Send once; redirects are not followed (a 3xx is the subscriber's misconfiguration).

        Args:
            addresses: the addresses the URL's host was checked at; the connection goes to one of
                them instead of resolving the name again (DNS rebinding).
        """
        started = time.perf_counter()
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        pins = {(parts.hostname or "", port): addresses} if addresses else None
        error: str | None = None
        with deadline(self.timeout_s, pins=pins) as call:
            try:
                with self.session.post(url, data=payload, headers=dict(headers), timeout=call.remaining(),
                                       allow_redirects=False, stream=True) as resp:
                    excerpt = resp.raw.read(self.excerpt_bytes, decode_content=True) or b""
                    status, retry_after = resp.status_code, resp.headers.get("Retry-After")
            except requests.Timeout:
                # Each read's own timeout is what is left of the deadline: the same expiry.
                error = f"timed out after {self.timeout_s:g}s (exceeded its total deadline)"
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
                # raw.read() raises urllib3's errors (a body cut off, a read timeout), not requests'.
                error = f"connection failed: {type(err).__name__}"
        latency = (time.perf_counter() - started) * 1000
        if call.expired:
            # Whatever the cut-off socket made the read return, the subscriber did not answer in time.
            error = f"timed out after {self.timeout_s:g}s (exceeded its total deadline)"
        if error is not None:
            return AttemptResult(None, latency, error=error)
        return AttemptResult(status, latency, excerpt.decode("utf-8", errors="replace") or None,
                             retry_after=parse_retry_after(retry_after, now=self.clock()))
