"""Writing the polls that changed nothing (no snapshot, no event): most polls, and the poll path's
cost at scale (issue 13). Each takes a Session and never commits.

On PostgreSQL one statement per table, whatever the chunk's size: the schedules are moved on by an
``UPDATE … FROM unnest(…)`` that checks each poll's lease as it locks its row (a claim or pause
that moved the lease on wins), and the items of the polls that held theirs get one more; neither
changes an indexed column of ``items``, so PostgreSQL updates the rows in place (HOT). Measured at
1,000,000 items, the two statements took 6-12 ms for 200 polls where locking the rows and two
executemany UPDATEs took 21-30 ms. SQLite holds the whole database for the writer, so its leases
are read first and the rows written by executemany, handed to the driver as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, text
from sqlalchemy.orm import Session

from worker.store.models import Item

_ITEMS = cast(Table, Item.__table__)


@dataclass(frozen=True)
class QuietPoll:
    """One poll that changed nothing: its claim, next poll and what it found."""

    item_id: int
    lease_id: int
    next_poll_at: datetime | None
    consecutive_failures: int
    failing: bool
    polled_at: datetime
    version: str | None
    error: str | None  # None: it succeeded
    #: The digest of the document it found, to record (worker.store.repo.apply_outcomes); None: keep.
    digest: str | None = None


# What ``polled`` sets, said in SQL over the unnest's rows.
_MOVE_ON = text(
    "UPDATE item_schedules AS s SET next_poll_at = v.next_poll_at, lease_id = s.lease_id + 1, "
    "claims_since_poll = 0, due_since = NULL "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:leases AS integer[]), CAST(:nexts AS timestamptz[])) "
    "AS v(item_id, lease_id, next_poll_at) "
    "WHERE s.item_id = v.item_id AND s.lease_id = v.lease_id RETURNING s.item_id")

# A failure, or a success ending failures, changes the record (and ix_items_most_failures), so it
# moves updated_at; any other quiet poll leaves updated_at as it is, and so every indexed column.
_RECORD = text(
    "UPDATE items AS i SET last_polled_at = v.polled_at, consecutive_failures = v.failures, "
    "failing = v.failing, "
    "version = CASE WHEN v.ok THEN v.version ELSE i.version END, "
    "last_success_at = CASE WHEN v.ok THEN v.polled_at ELSE i.last_success_at END, "
    "last_error = CASE WHEN v.ok THEN i.last_error ELSE v.error END, "
    "last_error_at = CASE WHEN v.ok THEN i.last_error_at ELSE v.polled_at END, "
    "snapshot_digest = coalesce(v.digest, i.snapshot_digest), "
    "updated_at = CASE WHEN NOT v.ok OR i.consecutive_failures <> 0 THEN :now ELSE i.updated_at END "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:polled AS timestamptz[]), CAST(:failures AS integer[]), "
    "CAST(:failing AS boolean[]), CAST(:ok AS boolean[]), CAST(:versions AS text[]), CAST(:errors AS text[]), "
    "CAST(:digests AS text[])) "
    "AS v(id, polled_at, failures, failing, ok, version, error, digest) WHERE i.id = v.id")


def write_quiet(session: Session, polls: Sequence[QuietPoll], *, now: datetime,
                leases: Mapping[int, int] | None = None) -> set[int]:
    """Write ``polls``; returns the item ids of those that still held their lease (the others
    are left alone). ``leases`` (item id -> current lease, read under the write lock) is needed on
    SQLite; PostgreSQL checks each lease in the write itself."""
    if not polls:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        ordered = sorted(polls, key=lambda p: p.item_id)
        held = set(session.execute(_MOVE_ON, {
            "ids": [p.item_id for p in ordered], "leases": [p.lease_id for p in ordered],
            "nexts": [p.next_poll_at for p in ordered]}).scalars())
        kept = [p for p in ordered if p.item_id in held]
        if kept:
            session.execute(_RECORD, {
                "now": now, "ids": [p.item_id for p in kept], "polled": [p.polled_at for p in kept],
                "failures": [p.consecutive_failures for p in kept], "failing": [p.failing for p in kept],
                "ok": [p.error is None for p in kept], "versions": [p.version for p in kept],
                "errors": [p.error for p in kept], "digests": [p.digest for p in kept]})
        return held
    if leases is None:
        raise ValueError("SQLite needs the leases read under its write lock")
    kept = [p for p in polls if leases.get(p.item_id) == p.lease_id]
    _write_many(session, kept, now=now)
    return {p.item_id for p in kept}


def sqlite_leases(session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Item id -> its current lease, for those of ``ids`` that exist, on SQLite (whose writer
    holds the whole database, so nothing is locked). Through the driver: SQLAlchemy's expanding
    ``IN`` of 256 values and its ORM row handling were 2.7 ms of a 3.1 ms read."""
    rows = session.connection().exec_driver_sql(
        "SELECT s.item_id, s.lease_id FROM item_schedules AS s JOIN items AS i ON i.id = s.item_id "
        f"WHERE s.item_id IN ({', '.join('?' * len(ids))})", tuple(ids))
    return {item_id: lease for item_id, lease in rows}


# SQLite's writes, what _MOVE_ON and _RECORD say, a row at a time (executemany, in the driver's
# loop). Every SET expression reads the row as it was before the UPDATE, as on PostgreSQL.
_SQLITE_MOVE_ON = ("UPDATE item_schedules SET next_poll_at = ?, lease_id = lease_id + 1, claims_since_poll = 0, "
                   "due_since = NULL WHERE item_id = ?")
_SQLITE_RECORD = (
    "UPDATE items SET last_polled_at = :polled, consecutive_failures = :failures, failing = :failing, "
    "version = CASE WHEN :ok THEN :version ELSE version END, "
    "last_success_at = CASE WHEN :ok THEN :polled ELSE last_success_at END, "
    "last_error = CASE WHEN :ok THEN last_error ELSE :error END, "
    "last_error_at = CASE WHEN :ok THEN last_error_at ELSE :polled END, "
    "snapshot_digest = coalesce(:digest, snapshot_digest), "
    "updated_at = CASE WHEN NOT :ok OR consecutive_failures <> 0 THEN :now ELSE updated_at END "
    "WHERE id = :id")


def _write_many(session: Session, polls: Sequence[QuietPoll], *, now: datetime) -> None:
    """SQLite: the rows handed to the driver as they are. Through SQLAlchemy, its per-row parameter
    handling (bind processors, parameter dictionaries) was 7.5 ms of the 12 ms these two
    statements took for a chunk of 200 (measured at 1,000,000 items)."""
    if not polls:
        return
    conn = session.connection()
    # The columns' own conversion (worker.store.types.UTCDateTime, then SQLite's text format), so
    # what is stored is what every other write stores.
    stamp = _ITEMS.c.last_polled_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    assert stamp is not None
    conn.exec_driver_sql(_SQLITE_MOVE_ON, [(stamp(p.next_poll_at), p.item_id) for p in polls])
    at = stamp(now)
    conn.exec_driver_sql(_SQLITE_RECORD, [
        {"id": p.item_id, "polled": stamp(p.polled_at), "failures": p.consecutive_failures, "failing": p.failing,
         "ok": p.error is None, "version": p.version, "error": p.error, "digest": p.digest, "now": at}
        for p in polls])
