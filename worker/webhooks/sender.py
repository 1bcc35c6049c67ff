"""One POST to a subscriber, measured and never raising: every outcome becomes an AttemptResult."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

import requests

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
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.timeout_s = timeout_s
        self.excerpt_bytes = excerpt_bytes
        self.session = session or requests.Session()
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
