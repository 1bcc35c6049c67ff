"""Removing old history in small batches (`poller prune`, and beat once a day).

Each batch is its own short transaction of at most ``batch`` rows, sized to hold its locks about
25 ms, so polling and delivery go on meanwhile; on SQLite the prune then stands aside as long
again, so writers waiting for the one write lock get their turn.
What is never removed: the latest snapshot of an item, an event with a delivery still pending for
an active subscription (and that delivery's attempts), anything newer than its cutoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, exists, func, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from worker.clock import utcnow
from worker.retention import TABLES, Cutoffs
from worker.store import tallies
from worker.store.db import checkpoint, vacuum
from worker.store.models import (
    FINISHED,
    Delivery,
    DeliveryAttempt,
    Event,
    Item,
    ItemLabel,
    RetentionMark,
    Snapshot,
    Subscription,
)
from worker.store.repo import lock_leases

#: Items whose snapshots are counted per query when trimming each item's history.
ITEMS_PER_SCAN = 500
#: How long one batch should hold its locks, and the fewest rows a batch removes.
HOLD_S, MIN_BATCH = 0.025, 50
#: The tables each kind of history is deleted from (with what goes by cascade), vacuumed after.
DELETES_FROM = {"delivery_attempts": ("delivery_attempts",), "events": ("events", "deliveries", "delivery_attempts"),
                "snapshots": ("snapshots",), "items": ("items", "item_schedules", "item_labels", "item_failures")}


def _undelivered() -> ColumnElement[bool]:
    """Events a subscriber still waits for: a pending delivery to an active subscription."""
    return exists().where(Delivery.event_position == Event.position, Delivery.state == "pending",
                          Delivery.subscription_id == Subscription.id, Subscription.state == "active")


def _old_events(cut: datetime) -> ColumnElement[bool]:
    return (Event.created_at < cut) & ~_undelivered()


def _orphans(cut: datetime) -> ColumnElement[bool]:
    # The history of an untracked item (its row is gone), once it is older than the finished-item cutoff.
    return (Event.created_at < cut) & Event.item_id.is_not(None) \
        & ~exists().where(Item.id == Event.item_id) & ~_undelivered()


def _old_attempts(cut: datetime) -> ColumnElement[bool]:
    # An attempt of a delivery still retrying stays: it is that delivery's record of why.
    return (DeliveryAttempt.attempted_at < cut) & ~exists().where(
        Delivery.id == DeliveryAttempt.delivery_id, Delivery.state == "pending")


def _finished_items(cut: datetime) -> ColumnElement[bool]:
    # The states as literals, like the partial index ix_items_finished's own WHERE: SQLite uses a
    # partial index only when it can prove the query's condition implies the index's.
    return Item.state.in_(bindparam("finished", FINISHED, expanding=True, literal_execute=True)) \
        & (Item.updated_at < cut)


class Pruner:
    """Applies :class:`~worker.retention.Cutoffs` to the store.

    Args:
        batch: the most rows one transaction removes (fewer when they take longer than ``hold_s``).
        hold_s: how long one batch should hold its locks.
        sleep: how the prune stands aside between batches on SQLite.
        reads: read-only sessions for the picks (default ``sessions``).
    """

    def __init__(self, sessions: sessionmaker[Session], *, clock: Callable[[], datetime] = utcnow, batch: int = 1000,
                 progress: Callable[[str, int], None] | None = None, hold_s: float = HOLD_S,
                 sleep: Callable[[float], None] = time.sleep, reads: sessionmaker[Session] | None = None) -> None:
        self.sessions, self.clock, self.batch, self.hold_s, self.sleep = sessions, clock, batch, hold_s, sleep
        self.size, self.reads = min(batch, MIN_BATCH), reads or sessions
        self.bind = sessions.kw.get("bind")
        self.shared_lock = self.bind is not None and self.bind.dialect.name == "sqlite"
        self.progress = progress or (lambda _table, _n: None)

    def count(self, cut: Cutoffs) -> dict[str, int]:
        """What a prune with these cutoffs would remove, per table (``--dry-run``)."""
        counts = dict.fromkeys(TABLES, 0)
        with self.sessions.begin() as s:
            if cut.attempts is not None:
                counts["delivery_attempts"] = _count(s, select(DeliveryAttempt.id).where(_old_attempts(cut.attempts)))
            if cut.events is not None:
                counts["events"] = _count(s, select(Event.position).where(_old_events(cut.events)))
            if cut.finished_items is not None:
                items = select(Item.id).where(_finished_items(cut.finished_items))
                counts["items"] = _count(s, items)
                gone = (Event.item_id.in_(items) & ~_undelivered()) | _orphans(cut.finished_items)
                if cut.events is not None:
                    gone = gone & ~_old_events(cut.events)  # counted once, above
                counts["events"] += _count(s, select(Event.position).where(gone))
                counts["snapshots"] += _count(s, select(Snapshot.id).where(Snapshot.item_id.in_(items)))
            if cut.snapshots_keep is not None:
                counts["snapshots"] += self._surplus_count(s, cut.snapshots_keep)
        return counts

    def run(self, cut: Cutoffs) -> dict[str, int]:
        """Remove what the cutoffs allow, batch by batch; returns the rows removed per table."""
        done = dict.fromkeys(TABLES, 0)

        def add(table: str, n: int) -> None:
            done[table] += n
            if n:
                self.progress(table, n)

        # Each pick takes the oldest first, in the order of the index its cutoff ranges over
        # (ties by key): it reads from the start of that range until its batch is full, and the
        # last one stops at the cutoff, where a pick in key order would read on to the table's end.
        if (attempts := cut.attempts) is not None:
            self._drain(select(DeliveryAttempt.id).where(_old_attempts(attempts))
                        .order_by(DeliveryAttempt.attempted_at, DeliveryAttempt.id), DeliveryAttempt.id,
                        lambda s, ids: add("delivery_attempts", _rowcount(s.execute(
                            delete(DeliveryAttempt).where(DeliveryAttempt.id.in_(ids))))))
        if (events := cut.events) is not None:
            self._drain(select(Event.position).where(_old_events(events)).order_by(Event.created_at, Event.position),
                        Event.position, lambda s, ids: self._delete_events(s, ids, add, mark=True))
        if (finished := cut.finished_items) is not None:
            self._prune_items(finished, add)
            self._drain(select(Event.position).where(_orphans(finished)).order_by(Event.created_at, Event.position),
                        Event.position, lambda s, ids: self._delete_events(s, ids, add))
        if cut.snapshots_keep is not None:
            self._trim_snapshots(cut.snapshots_keep, add)
        if self.bind is not None:
            vacuum(self.bind, sorted({table for kind, n in done.items() if n for table in DELETES_FROM[kind]}))
        return done

    # -- batches --------------------------------------------------------------------------

    def _drain(self, pick: Select[int], key: Any, remove: Callable[[Session, Sequence[int]], None]) -> None:
        # Each round picks up to ``size`` rows in a read-only transaction (no lock: on SQLite,
        # reading the oldest rows can take longer than deleting them), then, in one short write
        # transaction, takes those that still qualify and removes them, until nothing is left to
        # pick. The running counts are folded as it goes, so a day's prune leaves readers a few
        # rows to sum, not a delta per delivery removed.
        # Each kind starts small: a batch of events (with their deliveries and attempts) holds
        # its locks far longer than one of attempts alone, so the size the last kind grew to
        # would hold them for 100-200 ms on its first batch.
        self.size = min(self.batch, MIN_BATCH)
        while True:
            size = self.size
            with self.reads.begin() as r:
                ids = r.scalars(pick.limit(size)).all()
            if ids:
                with self.sessions.begin() as s:
                    s.connection()  # the write lock, on SQLite: from here the batch holds it
                    started = time.perf_counter()
                    still = s.scalars(pick.where(key.in_(ids))).all()
                    if still:
                        remove(s, still)
                        tallies.fold(s)
                self._paced(time.perf_counter() - started)
            if len(ids) < size:
                return

    def _paced(self, held_s: float) -> None:
        """Size the next batch so it holds its locks about ``hold_s``; on SQLite, whose writers take
        turns on one lock, then stand aside as long as the batch held it. Without the pause the
        next batch starts at once and a writer waiting in SQLite's busy handler (which sleeps up to
        100 ms between tries) can miss its turn for several batches: at 10,000,000 events a dispatch
        claim waited 1.2 s."""
        scaled = int(self.size * self.hold_s / max(held_s, 1e-4))
        self.size = max(min(self.batch, MIN_BATCH), min(self.batch, scaled, 2 * self.size))
        if self.shared_lock:
            started = time.perf_counter()
            # The prune writes most of the log's pages between dispatch ticks: it copies them
            # itself, so the log stays short and a tick's checkpoint has little left to do.
            checkpoint(self.sessions.kw["bind"])
            self.sleep(max(0.0, held_s - (time.perf_counter() - started)))

    def _delete_events(self, s: Session, positions: Sequence[int], add: Callable[[str, int], None], *,
                       mark: bool = False) -> None:
        # Only the age cutoff removes the stream's oldest events, and so moves the mark that refuses
        # a cursor from before it; a finished or untracked item's history is removed from anywhere
        # in the stream, and marking it would refuse cursors among events still kept.
        newest = s.execute(select(func.max(Event.position), func.max(Event.created_at))
                           .where(Event.position.in_(positions))).one()
        deliveries = select(Delivery.id).where(Delivery.event_position.in_(positions))
        add("delivery_attempts", _rowcount(s.execute(
            delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries)))))
        s.execute(delete(Delivery).where(Delivery.event_position.in_(positions)))
        add("events", _rowcount(s.execute(delete(Event).where(Event.position.in_(positions)))))
        if mark and newest[0] is not None:
            _mark(s, "events", position=newest[0], at=newest[1], now=self.clock())

    def _prune_items(self, cut: datetime, add: Callable[[str, int], None]) -> None:
        # A batch of finished items at a time: their events, then their snapshots, each in batches
        # of their own (an item's history can be long), then the items, if still finished.
        while True:
            with self.sessions.begin() as s:
                ids = s.scalars(select(Item.id).where(_finished_items(cut))
                                .order_by(Item.updated_at, Item.id).limit(self.batch)).all()
            if ids:
                self._delete_items(ids, cut, add)
            if len(ids) < self.batch:
                return

    def _delete_items(self, ids: Sequence[int], cut: datetime, add: Callable[[str, int], None]) -> None:
        self._drain(select(Event.position).where(Event.item_id.in_(ids), ~_undelivered()).order_by(Event.position),
                    Event.position, lambda s, positions: self._delete_events(s, positions, add))
        self._drain(select(Snapshot.id).where(Snapshot.item_id.in_(ids), Item.id == Snapshot.item_id,
                                              _finished_items(cut)).order_by(Snapshot.id), Snapshot.id,
                    lambda s, batch: self._delete_snapshots(s, batch, add))
        with self.sessions.begin() as s:  # unless one was tracked again meanwhile
            gone = s.scalars(select(Item.id).where(Item.id.in_(ids), _finished_items(cut))).all()
            lock_leases(s, gone)  # their schedules first, as every writer locks (worker.store.schedule)
            s.execute(delete(ItemLabel).where(ItemLabel.item_id.in_(gone)))
            add("items", _rowcount(s.execute(delete(Item).where(Item.id.in_(gone)))))
            tallies.fold(s)

    @staticmethod
    def _delete_snapshots(s: Session, batch: Sequence[int], add: Callable[[str, int], None]) -> None:
        # A finished item resumed meanwhile is kept without these: its digest must not stand for a
        # snapshot that is gone, or its next poll would be decided against nothing (worker.polling).
        owners = select(Snapshot.item_id).where(Snapshot.id.in_(batch)).distinct().scalar_subquery()
        s.execute(update(Item).where(Item.id.in_(owners)).values(snapshot_digest=None)
                  .execution_options(synchronize_session=False))
        add("snapshots", _rowcount(s.execute(delete(Snapshot).where(Snapshot.id.in_(batch)))))

    def _trim_snapshots(self, keep: int, add: Callable[[str, int], None]) -> None:
        last = 0
        while True:
            with self.sessions.begin() as s:
                ids = s.scalars(select(Item.id).where(Item.id > last).order_by(Item.id).limit(ITEMS_PER_SCAN)).all()
                over = self._over(s, keep, ids)
            for item_id, threshold in over:
                self._drain(select(Snapshot.id).where(Snapshot.item_id == item_id, Snapshot.id < threshold)
                            .order_by(Snapshot.id), Snapshot.id,
                            lambda s, batch: add("snapshots", _rowcount(s.execute(
                                delete(Snapshot).where(Snapshot.id.in_(batch))))))
            if len(ids) < ITEMS_PER_SCAN:
                return
            last = ids[-1]

    def _over(self, s: Session, keep: int, item_ids: Sequence[int] | None = None) -> list[tuple[int, int]]:
        """Items with more than their latest and ``keep`` snapshots, each with the id below which
        its snapshots go (that of its ``keep`` + 1st newest)."""
        q = select(Snapshot.item_id).group_by(Snapshot.item_id).having(func.count() > keep + 1)
        if item_ids is not None:
            if not item_ids:
                return []
            q = q.where(Snapshot.item_id.between(item_ids[0], item_ids[-1]))
        out = []
        for item_id in s.scalars(q).all():
            kept = s.scalars(select(Snapshot.id).where(Snapshot.item_id == item_id)
                             .order_by(Snapshot.id.desc()).limit(keep + 1)).all()
            out.append((item_id, kept[-1]))
        return out

    def _surplus_count(self, s: Session, keep: int) -> int:
        return sum(_count(s, select(Snapshot.id).where(Snapshot.item_id == i, Snapshot.id < t))
                   for i, t in self._over(s, keep))


def _count(s: Session, q: Any) -> int:
    return int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _mark(s: Session, name: str, *, position: int, at: datetime, now: datetime) -> None:
    mark = s.get(RetentionMark, name, with_for_update=True)
    if mark is None:
        s.add(RetentionMark(name=name, position=position, at=at, updated_at=now))
    elif position > mark.position:
        mark.position, mark.at, mark.updated_at = position, max(at, mark.at), now
    s.flush()
