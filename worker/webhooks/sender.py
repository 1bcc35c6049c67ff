"""One POST to a subscriber, measured and never raising: every outcome becomes an AttemptResult."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime

import requests
import requests.adapters

from worker.backoff import parse_retry_after
from worker.providers.base import utcnow
from worker.webhooks.decision import AttemptResult


class WebhookSender:
    """Posts signed payloads over keep-alive connections.

    Args:
        timeout_s: a subscriber answering slower than this has failed (Svix Cloud: 15 s).
        excerpt_bytes: how much of each response is kept for the attempt log.
        session: an injected requests session.
        clock: for Retry-After dates.
    """

    def __init__(self, timeout_s: float = 15.0, excerpt_bytes: int = 4096, session: requests.Session | None = None,
                 clock: Callable[[], datetime] = utcnow, pool_size: int = 10) -> None:
        self.timeout_s = timeout_s
        self.excerpt_bytes = excerpt_bytes
        if session is None:
            session = requests.Session()
            # One kept-alive connection per sending thread and host.
            adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=max(pool_size, 10))
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            # Proxy settings are read from the environment once here, not on every request
            # (requests' per-request lookup was a third of a delivery's CPU time).
            session.trust_env = False
            session.proxies = {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
        self.session = session
        self.session.headers["User-Agent"] = "status-poller-webhooks/0.1"
        self.clock = clock

    def post(self, url: str, payload: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """Send once; redirects are not followed (a 3xx is the subscriber's misconfiguration)."""
        started = time.perf_counter()
        try:
            with self.session.post(url, data=payload, headers=dict(headers), timeout=self.timeout_s,
                                   allow_redirects=False, stream=True) as resp:
                excerpt = resp.raw.read(self.excerpt_bytes, decode_content=True) or b""
                latency = (time.perf_counter() - started) * 1000
                return AttemptResult(
                    resp.status_code, latency, excerpt.decode("utf-8", errors="replace") or None,
                    retry_after=parse_retry_after(resp.headers.get("Retry-After"), now=self.clock()))
        except requests.Timeout:
            error = f"timed out after {self.timeout_s:g}s"
        except requests.RequestException as err:
            error = f"connection failed: {type(err).__name__}"
        return AttemptResult(None, (time.perf_counter() - started) * 1000, error=error)
