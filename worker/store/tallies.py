"""Running counts of items and deliveries, so `poller status`, the dashboard, the metrics scrape
and the capacity check read a few rows instead of counting a million items and ten million
deliveries.

Triggers (migration 0010) append a delta row (+1, -1) for every insert, delete and change of a
counted column; a reader sums the deltas per key, and ``fold`` (each dispatch tick, and each prune
batch) replaces them with one row per key. Appending rather than updating one counter row means two
transactions never wait on, or deadlock over, the same row; the counts are exactly as transactional
as the rows they count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Table, func, select, text
from sqlalchemy.orm import Session

from worker.store.models import DeliveryTally, ItemTally

_ITEMS: Table = ItemTally.__table__  # type: ignore[assignment]
_DELIVERIES: Table = DeliveryTally.__table__  # type: ignore[assignment]
#: tally table -> the columns it counts by
KEYS = {_ITEMS: ("provider", "account", "state", "interval_s"), _DELIVERIES: ("subscription_id", "state")}


@dataclass(frozen=True)
class ItemCount:
    """How many items have this provider, account, state and interval."""

    provider: str
    account: str
    state: str
    interval_s: float
    n: int


def item_counts(session: Session) -> list[ItemCount]:
    """Items per provider, account, state and interval (groups with none left out)."""
    t, total = _ITEMS.c, func.sum(_ITEMS.c.n)
    rows = session.execute(select(t.provider, t.account, t.state, t.interval_s, total)
                           .group_by(t.provider, t.account, t.state, t.interval_s).having(total != 0))
    return [ItemCount(p, a, s, float(i), int(n)) for p, a, s, i, n in rows]


def items_by_provider(counts: Sequence[ItemCount]) -> dict[str, dict[str, int]]:
    """provider -> state -> items (pure)."""
    out: dict[str, dict[str, int]] = {}
    for c in counts:
        by = out.setdefault(c.provider, {})
        by[c.state] = by.get(c.state, 0) + c.n
    return out


def delivery_counts(session: Session, subscription_id: int | None = None) -> dict[int, dict[str, int]]:
    """subscription id -> delivery state -> deliveries (states with none left out), for every
    subscription or the one given."""
    t, total = _DELIVERIES.c, func.sum(_DELIVERIES.c.n)
    query = select(t.subscription_id, t.state, total).group_by(t.subscription_id, t.state).having(total != 0)
    if subscription_id is not None:
        query = query.where(t.subscription_id == subscription_id)
    counts: dict[int, dict[str, int]] = {}
    for sub_id, state, n in session.execute(query):
        counts.setdefault(sub_id, {})[state] = int(n)
    return counts


def fold(session: Session) -> None:
    """Replace each key's deltas with their sum (a key that sums to nothing disappears).

    PostgreSQL does it in one statement, so the rows summed are exactly the rows deleted, whatever
    commits meanwhile (two folds at once each sum only what they themselves deleted). SQLite runs
    one writer at a time, so within this write transaction nothing else can slip in.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    for table, keys in KEYS.items():
        names = ", ".join(keys)
        if postgres:
            session.execute(text(
                f"WITH gone AS (DELETE FROM {table.name} RETURNING {names}, n) "
                f"INSERT INTO {table.name} ({names}, n) SELECT {names}, sum(n) FROM gone GROUP BY {names} "
                f"HAVING sum(n) <> 0"))
            continue
        last = session.scalar(select(func.max(table.c.id)))
        if last is None:
            continue
        session.execute(text(
            f"INSERT INTO {table.name} ({names}, n) SELECT {names}, sum(n) FROM {table.name} WHERE id <= :last "
            f"GROUP BY {names} HAVING sum(n) <> 0"), {"last": last})
        session.execute(text(f"DELETE FROM {table.name} WHERE id <= :last"), {"last": last})


def recount(session: Session) -> None:
    """Count every item and delivery afresh (after a bulk load with the triggers off)."""
    for table, keys in KEYS.items():
        source = "items" if table is _ITEMS else "deliveries"
        names = ", ".join(keys)
        session.execute(table.delete())
        session.execute(text(f"INSERT INTO {table.name} ({names}, n) SELECT {names}, count(*) FROM {source} "
                             f"GROUP BY {names}"))
