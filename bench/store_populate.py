"""Populating bench/store.py's database: migrate it, then bulk-load the rows of bench/store_data.py.

SQLite gets plain inserts on the raw sqlite3 connection (no journal, no fsync), PostgreSQL COPY; the
large tables' secondary indexes and constraints are dropped before the load and made again after it.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import Engine, Table, bindparam, func, make_url, select, update
from store_data import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    LABEL_COLUMNS,
    SCHEDULE_COLUMNS,
    SNAPSHOT_COLUMNS,
    History,
    Layout,
    Stamp,
    item_rows,
    snapshot_rows,
)
from store_documents import ALERTS, Documents, status_of

from worker.documents import document_digest, dumps_strict
from worker.domain import StatusDocument
from worker.status import record_heartbeat
from worker.store import deliveries as drepo
from worker.store import tallies
from worker.store.db import make_engine, make_sessionmaker
from worker.store.migrate import upgrade
from worker.store.models import Item, Snapshot
from worker.webhooks.payload import new_secret

#: The tables the bulk load fills.
BULK_TABLES = ("items", "item_schedules", "item_labels", "snapshots", "events", "deliveries", "delivery_attempts")
#: The large ones, whose secondary indexes and constraints are dropped and made again (from the
#: definitions the migrations left) after their load. Only plain column indexes: the items' partial
#: indexes stay as migrated (PostgreSQL would write their predicates back in another form).
REBUILT = ("snapshots", "events", "deliveries", "delivery_attempts")
HISTORY_CHUNK = 20_000


class SqliteLoader:
    """Bulk inserts on the raw sqlite3 connection: no journal and no fsync while loading."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-1048576")  # 1 GiB while loading (the index builds sort)
        self.db.execute("BEGIN")
        self.indexes: list[str] = []
        self.triggers: list[str] = []

    def drop_indexes(self, tables: Sequence[str]) -> None:
        # The triggers too: SQLite cannot switch them off (they are made again after the load).
        for name, sql in self.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall():
            self.triggers.append(sql)
            self.db.execute(f'DROP TRIGGER "{name}"')
        rows = self.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                               f"AND tbl_name IN ({', '.join('?' * len(tables))})", tables).fetchall()
        for name, sql in rows:
            self.indexes.append(sql)
            self.db.execute(f'DROP INDEX "{name}"')

    def load(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                            rows)

    def commit(self) -> None:
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def finish(self) -> None:
        for sql in self.indexes + self.triggers:  # the migrations' own statements, as they were
            self.db.execute(sql)
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.close()


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgLoader:
    """COPY FROM STDIN, with the constraints and secondary indexes made after the load."""

    def __init__(self, url: str) -> None:
        self.db = psycopg.connect(libpq_url(url))
        self.db.execute("SET TIME ZONE 'UTC'")
        self.db.execute("SET synchronous_commit = off")
        self.db.execute("SET maintenance_work_mem = '512MB'")
        self.constraints: list[tuple[str, str, str]] = []
        self.indexes: list[str] = []

    def drop_indexes(self, tables: Sequence[str]) -> None:
        names = list(tables)
        # Unique and foreign-key constraints (the primary keys stay), foreign keys first.
        self.constraints = [(t, n, d) for t, n, d in self.db.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid::regclass::text = ANY(%s) AND contype IN ('u', 'f') ORDER BY contype = 'u', conname",
            (names,)).fetchall()]
        self.indexes = [d for (d,) in self.db.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s) "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY indexname", (names,)).fetchall()]
        for table, name, _ in self.constraints:
            self.db.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for table in ("items", "deliveries"):
            self.db.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for (name,) in self.db.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ANY(%s) "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)", (names,)).fetchall():
            self.db.execute(f'DROP INDEX "{name}"')

    def load(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with self.db.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def commit(self) -> None:
        self.db.commit()

    def finish(self) -> None:
        for sql in self.indexes:
            self.db.execute(sql)
        for table, name, definition in reversed(self.constraints):  # unique ones first, then foreign keys
            self.db.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for table in ("items", "deliveries"):
            self.db.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        for table, column in (("items", "id"), ("snapshots", "id"), ("events", "position"), ("deliveries", "id"),
                              ("delivery_attempts", "id")):
            self.db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                            f"(SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)")
        self.db.commit()
        self.db.autocommit = True
        for table in BULK_TABLES:  # what autovacuum would do after a load: visibility map, statistics
            self.db.execute(f"VACUUM (ANALYZE) {table}")
        self.db.close()


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def populate(url: str, lay: Layout) -> None:
    """Migrate, add the subscriptions and the last tick's heartbeat, then bulk-load the rest."""
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    t0 = datetime.fromtimestamp(lay.t0_us / 1e6, UTC)
    with sessions.begin() as s:
        drepo.add_subscription(s, kind="webhook", url="https://hooks.example.com/status-poller",
                               secret=new_secret(b"\x01" * 32), event_types=None, providers=None, now=t0)
        drepo.add_subscription(s, kind="webhook", url="https://alerts.example.com/poller", secret=new_secret(
            b"\x02" * 32), event_types=list(ALERTS), providers=None, now=t0)
        record_heartbeat(s, "dispatch", at=t0, seconds=0.25, claimed=0)
    engine.dispose()
    loader: SqliteLoader | PgLoader = PgLoader(url) if url.startswith("postgresql") else SqliteLoader(
        Path(make_url(url).database or ""))
    loader.drop_indexes(REBUILT)
    started = time.perf_counter()
    stamp, docs = Stamp(), Documents()
    step = 50_000
    for lo in range(0, lay.items, step):
        hi = min(lay.items, lo + step)
        items, schedules = item_rows(lay, lo, hi, stamp)
        loader.load("items", ITEM_COLUMNS, items)
        loader.load("item_schedules", SCHEDULE_COLUMNS, schedules)
        loader.load("item_labels", LABEL_COLUMNS, [(i + 1, key, value) for i in range(lo, hi) if i % 3 == 0
                                                   for key, value in (("customer", f"c{i % 5000:04d}"),
                                                                      ("env", "prod"))])
    loader.commit()
    progress(f"items loaded: {lay.items:,} ({time.perf_counter() - started:.0f} s)")
    # A few items with a long history (older snapshots first: the latest has the highest id).
    old = [(i, n) for i in range(min(lay.history_items, lay.items)) for n in range(lay.history_snapshots - 1)]
    acct_of = lay.accounts
    loader.load("snapshots", SNAPSHOT_COLUMNS, [
        (m + 1, i + 1, stamp(lay.start_us + n * 3_600_000_000), status_of(acct_of[i], n % 4), 0,
         docs.fields[(acct_of[i], n % 4, False)], docs.raw[(acct_of[i], n % 4, False)].replace(
             "@REF@", str(1_000_000 + i)))
        for m, (i, n) in enumerate(old)])
    for lo in range(0, lay.items, step):
        loader.load("snapshots", SNAPSHOT_COLUMNS,
                    snapshot_rows(lay, docs, lo, min(lay.items, lo + step), len(old) + lo + 1, stamp))
    loader.commit()
    progress(f"snapshots loaded: {len(old) + lay.items:,} ({time.perf_counter() - started:.0f} s)")
    history = History(lay, docs)
    for lo in range(0, lay.events, HISTORY_CHUNK):
        chunk = history.chunk(lo, min(lay.events, lo + HISTORY_CHUNK))
        loader.load("events", EVENT_COLUMNS, chunk.events)
        loader.load("deliveries", DELIVERY_COLUMNS, chunk.deliveries)
        loader.load("delivery_attempts", ATTEMPT_COLUMNS, chunk.attempts)
        if (lo // HISTORY_CHUNK) % 25 == 24:
            loader.commit()
            progress(f"events loaded: {lo + HISTORY_CHUNK:,} of {lay.events:,} ({time.perf_counter() - started:.0f} s)")
    loader.commit()
    progress(f"history loaded: {lay.events:,} events, {history.delivery_id:,} deliveries, "
             f"{history.attempt_id:,} attempts ({time.perf_counter() - started:.0f} s); building indexes")
    loader.finish()
    # The running counts, which the tally triggers (off during the load) would have kept a row at a time.
    engine = make_engine(url)
    with make_sessionmaker(engine).begin() as s:
        tallies.recount(s)
    engine.dispose()
    progress(f"indexes built{', vacuumed and analyzed' if isinstance(loader, PgLoader) else ''} "
             f"({time.perf_counter() - started:.0f} s)")


def record_digests(engine: Engine) -> int:
    """Give every item whose digest is not known that of its latest snapshot, as its next quiet
    poll would (a store populated or kept before migration 0016 has none); returns how many."""
    latest = (select(func.max(Snapshot.id).label("id")).group_by(Snapshot.item_id)).subquery()
    rows = select(Snapshot.item_id, Snapshot.status, Snapshot.terminal, Snapshot.fields).join(
        latest, latest.c.id == Snapshot.id).join(Item, Item.id == Snapshot.item_id).where(
        Item.snapshot_digest.is_(None))
    digests: dict[tuple[str, bool, str], str] = {}
    done = 0
    with make_sessionmaker(engine).begin() as s:
        batch: list[dict[str, Any]] = []
        for row in s.execute(rows).all():
            key = (row.status, row.terminal, dumps_strict(row.fields))
            if key not in digests:  # the populated documents are a few templates
                digests[key] = document_digest(StatusDocument(row.status, row.terminal, row.fields))
            batch.append({"b_id": row.item_id, "b_digest": digests[key]})
        table = cast(Table, Item.__table__)
        for lo in range(0, len(batch), 50_000):
            s.connection().execute(update(table).where(table.c.id == bindparam("b_id"))
                                   .values(snapshot_digest=bindparam("b_digest")), batch[lo:lo + 50_000])
            done += len(batch[lo:lo + 50_000])
    return done
