"""Provider pushes as triggers (issue 14): `POST /ingress/{provider}/{account}[/{token}]` calls this.

A believed push makes the items it names due now, through the same claim path as the schedule:
one UPDATE sets their next poll to now and moves their lease on, so a poll already under way
can no longer store its (possibly older) answer, and the next claim polls them afresh. The
dispatch tick is then asked to run at once (``kick``), so the change is seen within a moment
of the push instead of at the next tick. A push never writes an event itself.

Pushes are rate-limited per provider account (``push_rate_per_second``, ``push_burst``): past
that a push is answered 429 and polling goes on at its own pace. Since the claim takes the most
overdue items first, a flood of pushes cannot starve scheduled polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.clock import utcnow
from worker.errors import ConfigurationError, InputError
from worker.providers.registry import ProviderSet
from worker.pushes import Named, PushRefused, check_size, pushed_items, verify_billit, verify_token
from worker.store import items

log = structlog.get_logger(__name__)

#: Providers that push, and how long an Amili IdempotencyKey is remembered.
PUSHING = ("billit", "amili_collection")
IDEMPOTENCY_TTL_S = 24 * 3600


@dataclass(frozen=True)
class PushResult:
    """What the ingress answers: ``outcome`` (``accepted``, ``untracked``, ``duplicate``) and the
    ids of the items made due."""

    outcome: str
    item_ids: list[int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"outcome": self.outcome, "items": self.item_ids}


class Bucket:
    """A token bucket per key, in this process (pure apart from its lock; ``now`` is monotonic seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[Any, tuple[float, float]] = {}

    def take(self, key: Any, *, rate: float, burst: int, now: float) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        with self._lock:
            tokens, at = self._state.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            if tokens >= 1:
                self._state[key] = (tokens - 1, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1 - tokens) / rate


class Ingress:
    """Believes or refuses a push, and makes what it names due now.

    Args:
        sessions: the poller database.
        providers: the configured provider accounts (their push secrets and tokens).
        seen: remembers an idempotency key for a while; True when it was new (the broker's Redis
            ``SET NX EX``). None: every push is new (a retried push then costs one more poll).
        kick: asks the dispatch tick to run now (a Celery message); None waits for the next tick.
        registered: the secrets of the webhooks `poller providers webhooks sync` registered for a
            ``(provider, account)``; a push signed with one of them is believed too.
    """

    def __init__(self, sessions: sessionmaker[Session], providers: ProviderSet, *,
                 seen: Callable[[str, int], bool] | None = None, kick: Callable[[], None] | None = None,
                 registered: Callable[[str, str], list[str]] | None = None,
                 clock: Callable[[], datetime] = utcnow, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.sessions, self.providers, self.seen, self.kick = sessions, providers, seen, kick
        self.registered = registered
        self.clock, self.monotonic, self.wall = clock, monotonic, wall
        self.bucket = Bucket()

    def accept(self, provider: str, account: str, *, token: str | None, headers: Mapping[str, str],
               body: bytes) -> PushResult:
        """Handle one push; ``headers`` with lower-case names.

        Raises:
            PushRefused: not believed, unreadable or over the rate (nothing polled, nothing stored).
        """
        try:
            result = self._accept(provider, account, token, headers, body)
        except PushRefused as err:
            metrics.ingress(provider if provider in PUSHING else "unknown", err.outcome)
            log.warning("push.refused", provider=provider, account=account, outcome=err.outcome, reason=str(err))
            raise
        metrics.ingress(provider, result.outcome)
        log.info("push.accepted", provider=provider, account=account, outcome=result.outcome,
                 items=result.item_ids)
        return result

    def _accept(self, provider: str, account: str, token: str | None, headers: Mapping[str, str],
                body: bytes) -> PushResult:
        if provider not in PUSHING:
            raise PushRefused(404, "unknown_account", f"no pushes from {provider!r} (pushing providers: "
                              f"{', '.join(PUSHING)})")
        try:
            settings: Any = self.providers.get(provider, account).settings
        except (ConfigurationError, InputError):
            raise PushRefused(404, "unknown_account", f"{provider} has no account {account!r}") from None
        check_size(None, body)
        if provider == "billit":
            secret = settings.webhook_secret
            known = [secret.get_secret_value()] if secret else []
            if self.registered is not None:
                known += self.registered(provider, account)
            verify_billit(headers.get("billit-signature"), body, known, now=self.wall())
        else:
            expected = settings.push_token
            verify_token(token, expected.get_secret_value() if expected else None)
        wait = self.bucket.take((provider, account), rate=settings.push_rate_per_second,
                                burst=settings.push_burst, now=self.monotonic())
        if wait:
            raise PushRefused(429, "rate_limited", f"over {settings.push_rate_per_second:g} pushes per second "
                              f"for {provider}/{account}; retry in {wait:.1f} s", retry_after_s=wait)
        named = pushed_items(provider, body, headers)
        key = headers.get("idempotencykey")
        if key and self.seen is not None and not self._new(f"{provider}:{account}:{key}"):
            return PushResult("duplicate", [])
        ids = self.make_due(provider, account, named)
        if ids and self.kick is not None:
            try:
                self.kick()
            except Exception:  # noqa: BLE001 - the items are due; the next tick polls them
                log.warning("push.kick_failed", provider=provider, account=account)
        return PushResult("accepted" if ids else "untracked", ids)

    def _new(self, key: str) -> bool:
        assert self.seen is not None
        try:
            return self.seen(key, IDEMPOTENCY_TTL_S)
        except Exception:  # noqa: BLE001 - without Redis a retried push costs one more poll, no more
            log.warning("push.dedupe_unavailable")
            return True

    def make_due(self, provider: str, account: str, named: list[Named]) -> list[int]:
        """Make the active items named due now, their lease moved on; returns their ids."""
        with self.sessions.begin() as s:
            return items.make_due(s, provider, account, [(n.kind, n.ref) for n in named], now=self.clock())
