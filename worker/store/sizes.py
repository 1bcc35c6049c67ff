"""How large the store is: the database's bytes and each history table's rows.

Cheap enough for `poller status` at any size: PostgreSQL's planner estimate (``reltuples``) and
SQLite's key range for tables past ``EXACT_BELOW`` rows (a prune leaves few holes below its key
range), an exact count for smaller ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from worker.store.models import Delivery, DeliveryAttempt, Event, Item, Snapshot

#: Tables counted, with the integer key whose range estimates a large one's rows.
TABLES = {"items": Item.id, "snapshots": Snapshot.id, "events": Event.position, "deliveries": Delivery.id,
          "delivery_attempts": DeliveryAttempt.id}
#: Below this many keys in range a table is counted exactly.
EXACT_BELOW = 10_000


@dataclass
class StoreSize:
    """The database's size in bytes (None when unknown) and rows per table."""

    bytes: int | None = None
    rows: dict[str, int] = field(default_factory=dict)
    estimated: list[str] = field(default_factory=list)  # tables whose count is an estimate
    #: PostgreSQL: its ``shared_buffers``, and the bytes every poll reads from (the items and their
    #: schedules, with their indexes). None on SQLite, which reads through the OS's cache.
    cache_bytes: int | None = None
    hot_bytes: int | None = None

    @property
    def cache_short(self) -> bool:
        """PostgreSQL's buffers cannot hold what every poll reads: at 1,000,000 items (0.8 GB of
        them) with the default 128 MB, a poll's writes went over 50 ms at p95 (48-60 over three
        runs), within it with 6 GB (BENCHMARKS.md, bench/store.py)."""
        return self.cache_bytes is not None and self.hot_bytes is not None and self.cache_bytes < self.hot_bytes


def store_size(session: Session) -> StoreSize:
    """Measure the store through ``session``."""
    bind = session.get_bind()
    size = StoreSize()
    if bind.dialect.name == "postgresql":
        size.bytes, size.cache_bytes, size.hot_bytes = session.execute(text(
            "SELECT pg_database_size(current_database()), pg_size_bytes(current_setting('shared_buffers')), "
            "coalesce(pg_total_relation_size(to_regclass('items')), 0) "
            "+ coalesce(pg_total_relation_size(to_regclass('item_schedules')), 0)")).one()
        estimates = {name: int(n) for name, n in session.execute(
            text("SELECT relname, reltuples::bigint FROM pg_class WHERE relkind = 'r' AND relname = ANY(:names)"),
            {"names": list(TABLES)})}
        for table, key in TABLES.items():
            guess = estimates.get(table, -1)
            if guess >= EXACT_BELOW:
                size.rows[table] = int(guess)
                size.estimated.append(table)
            else:  # never analyzed (-1) or small: counting is cheap
                size.rows[table] = session.scalar(select(func.count(key))) or 0
        return size
    pages = session.scalar(text("PRAGMA page_count")) or 0
    page_size = session.scalar(text("PRAGMA page_size")) or 0
    size.bytes = pages * page_size + _wal_bytes(session.get_bind().engine.url.database)
    for table, key in TABLES.items():
        # Each its own subquery: SQLite reads a lone min() or max() off an end of the key, but
        # min() and max() in one SELECT scan the whole table.
        low, high = session.execute(select(select(func.min(key)).scalar_subquery(),
                                           select(func.max(key)).scalar_subquery())).one()
        span = 0 if low is None else high - low + 1
        if span >= EXACT_BELOW:
            size.rows[table] = span
            size.estimated.append(table)
        else:
            size.rows[table] = session.scalar(select(func.count(key))) or 0
    return size


def _wal_bytes(database: str | None) -> int:
    if not database or database == ":memory:":
        return 0
    try:
        return os.path.getsize(f"{database}-wal")
    except OSError:
        return 0
