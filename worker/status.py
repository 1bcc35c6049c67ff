"""What `poller status` and `poller health` report: one read of the database (and a broker ping)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from worker.capacity import LimitOf, Need, needs_of
from worker.clock import utcnow
from worker.dates import iso_z
from worker.faults import Fault
from worker.store import health, tallies
from worker.store.db import insert_for
from worker.store.models import STUCK_AFTER_CLAIMS as STUCK_AFTER_CLAIMS  # part of this module's interface
from worker.store.models import Heartbeat
from worker.store.sizes import StoreSize, store_size
from worker.store.stream import oldest_event_at


def age_seconds(now: datetime, since: datetime | None) -> float:
    """Seconds from ``since`` to ``now``; 0 for none or for a time in the future."""
    return max(0.0, (now - since).total_seconds()) if since else 0.0


def record_heartbeat(session: Session, name: str, *, at: datetime, seconds: float, claimed: int) -> None:
    """Record that a recurring job ran: one atomic upsert, because two ticks may run at once (on
    PostgreSQL a read-then-insert lets both insert the first row, and one fails)."""
    values = {"name": name, "at": at, "seconds": seconds, "claimed": claimed}
    stmt = insert_for(session)(Heartbeat).values(**values)
    session.execute(stmt.on_conflict_do_update(index_elements=[Heartbeat.name],
                                               set_={"at": at, "seconds": seconds, "claimed": claimed}))


@dataclass
class Status:
    """The figures an operator looks at first."""

    now: datetime
    items: dict[str, dict[str, int]] = field(default_factory=dict)  # provider -> state -> count
    overdue: int = 0
    most_overdue_seconds: float = 0.0
    failing: int = 0
    retrying: int = 0  # failed their last poll(s), not yet past POLLER_FAILING_AFTER
    stuck: int = 0
    auth_failed: list[str] = field(default_factory=list)  # "provider/account: error"
    deliveries_pending: int = 0
    oldest_pending_seconds: float = 0.0
    subscriptions: dict[str, int] = field(default_factory=dict)  # state -> count
    last_tick: datetime | None = None
    last_tick_seconds: float | None = None
    capacity: list[Need] = field(default_factory=list)  # per provider account with active items
    store: StoreSize | None = None
    oldest_event: datetime | None = None
    last_prune: datetime | None = None  # when a prune last finished
    sweeps: list[dict[str, Any]] = field(default_factory=list)  # one per provider account that swept

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "now": iso_z(self.now), "items": self.items, "overdue": self.overdue,
            "most_overdue_seconds": round(self.most_overdue_seconds, 3), "failing": self.failing,
            "retrying": self.retrying, "stuck": self.stuck, "auth_failed": self.auth_failed,
            "deliveries_pending": self.deliveries_pending,
            "oldest_pending_seconds": round(self.oldest_pending_seconds, 3), "subscriptions": self.subscriptions,
            "last_tick": iso_z(self.last_tick),
            "last_tick_seconds": self.last_tick_seconds,
            "capacity": [n.to_dict() for n in self.capacity],
            "store": None if self.store is None else {
                "bytes": self.store.bytes, "rows": self.store.rows, "estimated": self.store.estimated,
                "cache_bytes": self.store.cache_bytes, "hot_bytes": self.store.hot_bytes,
                "cache_short": self.store.cache_short},
            "oldest_event": iso_z(self.oldest_event),
            "last_prune": iso_z(self.last_prune),
            "sweeps": [{**sw, "ok_at": iso_z(sw["ok_at"]), "degraded_at": iso_z(sw["degraded_at"])}
                       for sw in self.sweeps],
        }


def read_status(sessions: sessionmaker[Session], *, tick_s: float, clock: Callable[[], datetime] = utcnow,
                limit_of: LimitOf = lambda provider, account: None) -> Status:
    """Read the status from the database (``limit_of``: each provider account's rate limit)."""
    now = clock()
    st = Status(now=now)
    with sessions.begin() as s:
        counts = tallies.item_counts(s)
        st.items = tallies.items_by_provider(counts)
        late = health.overdue(s, now - timedelta(seconds=tick_s))
        st.overdue = sum(n for n, _ in late.values())
        st.most_overdue_seconds = age_seconds(now, health.earliest([first for _, first in late.values()]))
        failed = health.failures(s).values()
        st.failing, st.retrying = sum(f.failing for f in failed), sum(f.retrying for f in failed)
        st.stuck = sum(health.stuck(s).values())
        st.auth_failed = [f"{p}/{a}: {e}" for p, a, e in health.auth_failures(s)]
        st.deliveries_pending = sum(by.get("pending", 0) for by in tallies.delivery_counts(s).values())
        st.oldest_pending_seconds = age_seconds(now, health.oldest_pending_delivery(s))
        for (_, state), n in sorted(health.subscription_counts(s).items(), key=lambda kv: kv[0][1]):
            st.subscriptions[state] = st.subscriptions.get(state, 0) + n
        st.capacity = needs_of(counts, limit_of)
        tick = s.get(Heartbeat, "dispatch")
        if tick:
            st.last_tick, st.last_tick_seconds = tick.at, tick.seconds
        st.store = store_size(s)
        st.oldest_event = oldest_event_at(s)
        pruned = s.get(Heartbeat, "prune")
        st.last_prune = pruned.at if pruned else None
        st.sweeps = [{"provider": row.provider, "account": row.account, "ok_at": row.ok_at,
                      "failures": row.failures, "error": row.error, "watermark": row.watermark,
                      "degraded_at": row.degraded_at}
                     for row in health.sweeps(s)]
    return st


@dataclass(frozen=True)
class Check:
    """One health check's verdict."""

    name: str
    ok: bool
    detail: str


def check_health(
    sessions: sessionmaker[Session], *, tick_s: float, max_lag_s: float, broker_ping: Callable[[], None] | None,
    clock: Callable[[], datetime] = utcnow, faults: Callable[[float], list[Fault]] | None = None,
) -> list[Check]:
    """Database reachable, broker reachable, workers without faults, the dispatch tick fresh,
    polling not lagging, no item stuck or failing, every provider account's credentials accepted.

    ``faults(window_s)`` returns what the workers recorded in the broker lately: a worker that
    cannot write the database can only say so there.
    """
    checks: list[Check] = []
    try:
        with sessions.begin() as s:
            s.execute(text("SELECT 1"))
        checks.append(Check("database", True, "reachable"))
    except Exception as err:  # noqa: BLE001 - the point is to report it
        checks.append(Check("database", False, f"unreachable: {type(err).__name__}"))
        return checks
    if broker_ping is None:
        checks.append(Check("broker", True, "not configured (embedded by `poller run`)"))
    else:
        try:
            broker_ping()
            checks.append(Check("broker", True, "reachable"))
        except Exception as err:  # noqa: BLE001
            checks.append(Check("broker", False, f"unreachable: {type(err).__name__}"))
    stale_after = max(3 * tick_s, 15.0)
    if faults is not None:
        window = max(stale_after, 60.0)
        try:
            seen = faults(window)
            checks.append(Check("workers", not seen, f"{len(seen)} task failures in the last {window:g}s, the latest: "
                                f"{seen[0].where}: {seen[0].error}" if seen else "no task failures"))
        except Exception as err:  # noqa: BLE001
            checks.append(Check("workers", False, f"cannot read worker faults: {type(err).__name__}"))
    st = read_status(sessions, tick_s=tick_s, clock=clock)
    if st.last_tick is None:
        checks.append(Check("beat", False, "no dispatch tick recorded yet (is `poller beat` running?)"))
    else:
        age = (st.now - st.last_tick).total_seconds()
        checks.append(Check("beat", age <= stale_after,
                            f"last dispatch tick {age:.1f}s ago (stale after {stale_after:g}s)"))
    checks.append(Check("lag", st.most_overdue_seconds <= max_lag_s,
                        f"{st.overdue} items overdue, the oldest by {st.most_overdue_seconds:.1f}s "
                        f"(limit {max_lag_s:g}s)"))
    checks.append(Check("items", not st.stuck and not st.failing,
                        f"{st.failing} failing, {st.stuck} stuck (claimed {STUCK_AFTER_CLAIMS}+ times without a "
                        f"completed poll), {st.retrying} retrying after a failure; see `poller items`"))
    checks.append(Check("providers", not st.auth_failed,
                        "; ".join(st.auth_failed) if st.auth_failed else "every account's credentials accepted"))
    return checks
