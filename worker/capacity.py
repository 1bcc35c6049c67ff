"""What the tracked items ask of each provider account, against the account's rate limit.

Every active item needs one poll per interval, so an account needs the sum of 1/interval over
its items. Above the account's rate limit the polls are deferred in turn and every item is polled
less often than asked, by the ratio of the two: the poller says so in `poller status`, in the
``poller_required_polls_per_second`` gauge beside ``poller_rate_limit_per_second``, and in a
warning log line each time the set of accounts over their limit changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker.domain import ItemState
from worker.providers.registry import REGISTRY, ProviderSet
from worker.store.tallies import ItemCount, item_counts

log = structlog.get_logger(__name__)

#: A provider account's rate limit in polls per second (None: no limit, or no such provider).
LimitOf = Callable[[str, str], "float | None"]


@dataclass(frozen=True)
class Need:
    """One provider account's polling need."""

    provider: str
    account: str
    items: int
    required_per_s: float
    limit_per_s: float | None

    @property
    def over(self) -> bool:
        """Whether its items need more polls than the rate limit lets through."""
        return self.limit_per_s is not None and self.required_per_s > self.limit_per_s

    @property
    def slowdown(self) -> float:
        """How many times longer than asked each item waits between polls (1.0 within the limit)."""
        return self.required_per_s / self.limit_per_s if self.over and self.limit_per_s else 1.0

    @property
    def setting(self) -> str | None:
        """The environment variable of the account's rate limit."""
        spec = REGISTRY.get(self.provider)
        return spec.settings_cls.env_name("rate_limit_per_second", self.account) if spec else None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return {"provider": self.provider, "account": self.account, "items": self.items,
                "required_polls_per_second": round(self.required_per_s, 3),
                "rate_limit_per_second": self.limit_per_s, "over_limit": self.over,
                "slowdown": round(self.slowdown, 2)}


def needs(rows: Iterable[tuple[str, str, int, float]], limit_of: LimitOf) -> list[Need]:
    """Needs from ``(provider, account, items, sum of 1/interval)`` rows (pure)."""
    return [Need(p, a, int(n), float(rate or 0.0), limit_of(p, a)) for p, a, n, rate in sorted(rows)]


def needs_of(counts: Iterable[ItemCount], limit_of: LimitOf) -> list[Need]:
    """Needs from the running item counts (pure): the active items of each account."""
    rows: dict[tuple[str, str], list[float]] = {}
    for c in counts:
        if c.state == ItemState.ACTIVE.value:
            row = rows.setdefault((c.provider, c.account), [0, 0.0])
            row[0] += c.n
            row[1] += c.n / c.interval_s
    return needs(((p, a, int(n), rate) for (p, a), (n, rate) in rows.items()), limit_of)


def read_needs(session: Session, limit_of: LimitOf) -> list[Need]:
    """Every provider account with active items, and what they need (from the running counts)."""
    return needs_of(item_counts(session), limit_of)


def limits_of(providers: ProviderSet) -> LimitOf:
    """The configured rate limit of each provider account (None for an unknown provider)."""
    def limit_of(provider: str, account: str) -> float | None:
        try:
            limit: float | None = providers.get(provider, account).settings.rate_limit_per_second
            return limit
        except Exception:  # noqa: BLE001 - an unknown or unconfigured provider has no limit to compare
            return None
    return limit_of


class CapacityWatch:
    """Logs a warning when an account's items need more than its rate limit, once per change.

    Reading the need scans the active items, so it is read at most every ``every_s`` seconds.
    """

    def __init__(self, sessions: sessionmaker[Session], limit_of: LimitOf, *, every_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.sessions, self.limit_of, self.every_s, self.monotonic = sessions, limit_of, every_s, monotonic
        self._lock = threading.Lock()
        self._next = 0.0
        self._over: frozenset[tuple[str, str]] = frozenset()

    def check(self) -> list[Need] | None:
        """Read the needs if it is time, log what changed; returns them (None when not read)."""
        with self._lock:
            if self.monotonic() < self._next:
                return None
            self._next = self.monotonic() + self.every_s
        with self.sessions.begin() as session:
            found = read_needs(session, self.limit_of)
        over = frozenset((n.provider, n.account) for n in found if n.over)
        with self._lock:
            before, self._over = self._over, over
        for need in found:
            key = (need.provider, need.account)
            if key in over and key not in before:
                log.warning("capacity.exceeded", provider=need.provider, account=need.account, items=need.items,
                            required_polls_per_second=round(need.required_per_s, 3),
                            rate_limit_per_second=need.limit_per_s, slowdown=round(need.slowdown, 2),
                            setting=need.setting,
                            hint="each item is polled `slowdown` times less often than its interval asks: "
                                 "raise the rate limit (`setting`) if the provider allows, or lengthen intervals")
        for provider, account in sorted(before - over):
            log.info("capacity.ok", provider=provider, account=account)
        return found
