"""The database-table sink: every event, exactly once, in a table of a database the user names.

Idempotent on the event id (insert ... on conflict do nothing), so a delivery batch retried after
a lost lease or a crash cannot write an event twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table

from worker.errors import ConfigurationError
from worker.store.db import insert_for, make_engine
from worker.store.types import JSONDoc, UTCDateTime

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SqlSink:
    """Writes events into ``table`` of the database at ``url`` (SQLite or PostgreSQL).

    Raises:
        ConfigurationError: a table name that is not a plain identifier, or another database.
    """

    def __init__(self, url: str, table: str = "poller_events", engine: Engine | None = None) -> None:
        if not _TABLE_NAME.match(table):
            raise ConfigurationError(f"POLLER_SINK_TABLE must be a plain SQL identifier, got {table!r}")
        self.engine = engine or make_engine(url)
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"POLLER_SINK_DATABASE_URL: {self.engine.dialect.name} is not supported")
        self.table = Table(
            table, MetaData(),
            Column("id", String(40), primary_key=True),
            Column("type", String(40), nullable=False),
            Column("created_at", UTCDateTime(), nullable=False),
            Column("item_id", Integer),
            Column("seq", Integer),
            Column("data", JSONDoc, nullable=False),
            Column("delivered_at", UTCDateTime(), nullable=False),
        )
        self._ready = False

    def ensure_table(self) -> None:
        """Create the table if absent (the user's database, so never altered otherwise)."""
        if not self._ready:
            self.table.metadata.create_all(self.engine, checkfirst=True)
            self._ready = True

    def write(self, events: Sequence[dict[str, Any]], *, now: datetime) -> None:
        """Insert events (dicts with id, type, created_at, item_id, seq, data); known ids are skipped."""
        if not events:
            return
        self.ensure_table()
        insert = insert_for(self.engine)
        rows = [{**e, "delivered_at": now} for e in events]
        with self.engine.begin() as conn:
            conn.execute(insert(self.table).on_conflict_do_nothing(index_elements=["id"]), rows)
