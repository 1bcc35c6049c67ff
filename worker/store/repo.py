"""Repository functions. Each takes a Session and never commits: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from worker.documents import document_digest
from worker.domain import ItemRef, ItemState, PollOutcome, PollState, StatusDocument
from worker.errors import Conflict, DuplicateItemError, ItemNotFoundError
from worker.store.deliveries import enqueue_deliveries
from worker.store.models import DUE_KEY, Event, Item, Schedule, Snapshot, due_by
from worker.store.quiet import QuietPoll, sqlite_leases, write_quiet
from worker.store.schedule import polled

#: The schedules table, for Core executemany updates (ORM bulk updates would match on the key only).
_SCHEDULES = cast(Table, Schedule.__table__)


@dataclass(frozen=True)
class Claim:
    """An item handed to a poll, with the lease that entitles it to write."""

    item_id: int
    lease_id: int


@dataclass(frozen=True)
class PollWork:
    """Everything a poll needs, read in one short transaction before the HTTP call."""

    claim: Claim
    item: ItemRef
    state: PollState
    #: The latest snapshot; None before the first, or not read yet (``digest`` set: see load_work).
    previous: StatusDocument | None
    #: The latest snapshot's digest (worker.documents.document_digest), None if not known.
    digest: str | None = None
    #: The provider's change marker from the last successful poll, for a conditional request.
    version: str | None = None

    @property
    def unread(self) -> bool:
        """Whether the item has a latest snapshot that was not read (its digest stands for it)."""
        return self.previous is None and self.digest is not None


def add_item(
    session: Session, *, provider: str, account: str, kind: str, ref: str, interval_s: float,
    now: datetime,
) -> Item:
    """Insert a new active item, due at once.

    Raises:
        DuplicateItemError: the same provider, account, kind and ref is already tracked.
    """
    existing = session.scalar(select(Item.id).where(
        Item.provider == provider, Item.account == account, Item.kind == kind, Item.ref == ref))
    if existing is not None:
        raise DuplicateItemError(
            f"{provider} {kind} {ref!r} (account {account!r}) is already tracked as item {existing}",
            existing_id=existing,
        )
    item = Item(provider=provider, account=account, kind=kind, ref=ref, interval_s=interval_s,
                state=ItemState.ACTIVE.value, next_poll_at=now, lease_id=0, consecutive_failures=0,
                failing=False, event_seq=0, claims_since_poll=0, created_at=now, updated_at=now)
    session.add(item)
    session.flush()
    return item


def get_item(session: Session, item_id: int, *, lock: bool = False) -> Item:
    """The item with ``item_id``, or ItemNotFoundError. With ``lock``, for a change of its state or
    schedule: it and its schedule are locked (lock_leases) and read afresh under the lock, so a
    claim or poll that committed meanwhile is not overwritten with what was read before it."""
    if lock:
        lock_leases(session, [item_id])
    item = session.get(Item, item_id, populate_existing=lock)
    if item is None:
        raise ItemNotFoundError(f"no tracked item has id {item_id}")
    return item


def delete_item(session: Session, item_id: int) -> Item:
    """Stop tracking: delete the item and its snapshots. Its events stay."""
    item = get_item(session, item_id, lock=True)  # the schedule first (worker.store.schedule's lock order)
    # One DELETE: the schedule and snapshots follow by the foreign keys' cascade.
    session.execute(delete(Item).where(Item.id == item_id).execution_options(synchronize_session=False))
    session.expunge(item)
    return item


def set_paused(session: Session, item_id: int, paused: bool, *, now: datetime) -> Item:
    """Pause (no polls) or resume (due now) an item. Resuming also revives a gone item.

    Pausing bumps the lease so a poll already in flight cannot write after the pause.

    Raises:
        ItemNotFoundError: no such item.
        Conflict: the item is finished (terminal): there is nothing left to poll.
    """
    item = get_item(session, item_id, lock=True)
    if item.state == ItemState.TERMINAL.value:
        raise Conflict(f"item {item_id} is finished (final status {item.last_status!r}); "
                       f"it cannot be {'paused' if paused else 'resumed'}", field="paused")
    if paused:
        item.state, item.next_poll_at, item.claims_since_poll = ItemState.PAUSED.value, None, 0
        item.schedule.due_since = None  # resumed, it takes its place from when it is due again
        item.lease_id += 1
    else:
        item.state, item.next_poll_at = ItemState.ACTIVE.value, now
    item.updated_at = now
    session.flush()
    return item


def list_items(session: Session) -> Sequence[Item]:
    """All items in id order."""
    return session.scalars(select(Item).order_by(Item.id)).all()


def claim_due(session: Session, *, now: datetime, lease_s: float, limit: int,
              lookahead_s: float = 0.0) -> list[Claim]:
    """Claim up to ``limit`` due items, most overdue first, and push them one lease ahead.

    One UPDATE ... WHERE id IN (indexed range scan) ... RETURNING: its cost follows the number of
    due items, not the number tracked. On PostgreSQL the inner select skips rows another
    dispatcher has locked, so concurrent dispatchers claim disjoint sets; SQLite serializes
    writers (BEGIN IMMEDIATE), which gives the same guarantee.
    """
    # Most overdue first: an item deferred by a rate limit keeps the time it first came due, so
    # it goes before items that came due after it (otherwise a busy account starves some items).
    due = select(Schedule.item_id).where(due_by(now + timedelta(seconds=lookahead_s))).order_by(DUE_KEY).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    # Only the narrow schedule rows are written (worker.store.schedule): the items are not touched.
    stmt = (update(Schedule).where(Schedule.item_id.in_(due.scalar_subquery()))
            .values(next_poll_at=now + timedelta(seconds=lease_s), lease_id=Schedule.lease_id + 1,
                    claims_since_poll=Schedule.claims_since_poll + 1,
                    due_since=func.coalesce(Schedule.due_since, Schedule.next_poll_at))
            .returning(Schedule.item_id, Schedule.lease_id, Schedule.due_since)
            .execution_options(synchronize_session=False))
    # RETURNING gives no order; hand the claims out most overdue first (the new due_since is the
    # time each item first came due).
    rows = sorted(session.execute(stmt), key=lambda row: (row.due_since, row.item_id))
    return [Claim(row.item_id, row.lease_id) for row in rows]


def padded(ids: list[int]) -> list[int]:
    """``ids`` repeated up to the next power of two: an IN list of any length is one of a few
    statements, which the drivers' statement caches keep (a new length would be a new statement
    to prepare, and pysqlite keeps up to 128 of them per connection, tens of KB each).

    >>> padded([5, 6, 7])
    [5, 6, 7, 7]
    """
    if not ids:
        return ids
    size = 1 << (len(ids) - 1).bit_length()
    return ids + [ids[-1]] * (size - len(ids))


def load_work(session: Session, claims: Sequence[Claim], *, documents: bool = True) -> list[PollWork]:
    """Read the claimed items still under their lease, with their latest snapshots.

    ``documents=False`` reads the snapshot only of items whose digest is not known: the others
    carry the digest instead (``PollWork.unread``), and latest_documents reads the few a poll
    turns out to need. Reading 200 random snapshots was most of a chunk's read at scale.
    Columns, not ORM objects: this runs for every poll, and nothing here is written back.
    """
    if not claims:
        return []
    leases = {c.item_id: c.lease_id for c in claims}
    rows = session.execute(select(
        Item.id, Item.provider, Item.account, Item.kind, Item.ref, Item.labels, Item.external_id, Schedule.lease_id,
        Item.interval_s, Item.consecutive_failures, Item.failing, Item.version, Item.snapshot_digest,
    ).join(Schedule, Schedule.item_id == Item.id)
        .where(Item.id.in_(padded(list(leases))), Item.state == ItemState.ACTIVE.value)).all()
    current = [r for r in rows if r.lease_id == leases[r.id]]
    wanted = [r.id for r in current if documents or r.snapshot_digest is None]
    snaps = latest_documents(session, wanted)
    work = []
    position = {c.item_id: n for n, c in enumerate(claims)}
    for row in sorted(current, key=lambda r: position[r.id]):  # the claim's order: most overdue first
        snap = snaps.get(row.id)
        previous = replace(snap, version=row.version) if snap else None
        work.append(PollWork(
            claim=Claim(row.id, row.lease_id),
            item=ItemRef(row.id, row.provider, row.account, row.kind, row.ref,
                         labels=dict(row.labels or {}), external_id=row.external_id),
            state=PollState(row.interval_s, row.consecutive_failures, row.failing,
                            snap is not None or row.snapshot_digest is not None),
            previous=previous, digest=row.snapshot_digest, version=row.version,
        ))
    return work


def latest_documents(session: Session, item_ids: Sequence[int]) -> dict[int, StatusDocument]:
    """The latest snapshot of each of these items that has one, as documents (no raw body)."""
    if not item_ids:
        return {}
    latest_ids = (select(func.max(Snapshot.id)).where(Snapshot.item_id.in_(padded(list(item_ids))))
                  .group_by(Snapshot.item_id))
    return {s.item_id: StatusDocument(s.status, s.terminal, s.fields) for s in session.execute(
        select(Snapshot.item_id, Snapshot.status, Snapshot.terminal, Snapshot.fields)
        .where(Snapshot.id.in_(latest_ids)))}


#: One written poll: its claim, the decided outcome, an id per event, the document's version and
#: when its call went out.
Written = tuple[Claim, PollOutcome, Sequence[str], "str | None", datetime]


def apply_outcomes(session: Session, batch: Sequence[Written], *, now: datetime,
                   lock_also: Sequence[int] = (), digests: Mapping[int, str] | None = None) -> list[list[Event] | None]:
    """Write a chunk's results in the caller's transaction; one entry per result, as apply_outcome.

    Polls that changed nothing (no snapshot, no event) are the common case: worker.store.quiet
    writes them all at once, checking each lease as it writes. The others are written one by one
    after their schedules are locked (lock_leases). ``lock_also``: items the same transaction
    writes next (deferred ones), locked with them. ``digests``: item id -> the digest of the
    document a successful poll found (worker.documents.document_digest), recorded when it changed
    nothing (a new snapshot records its own), so the item's next unchanged poll reads no snapshot.

    A written poll uses its lease up (the lease moves on): a duplicate of the same claim writes
    nothing.
    """
    if not batch and not lock_also:
        return []
    # Claimed items are active and a held lease proves nothing changed that since: a quiet poll's
    # write leaves the state out, so the index that counts items by state is not rewritten.
    digests = digests or {}
    quiet = [QuietPoll(c.item_id, c.lease_id, o.next_poll_at, o.consecutive_failures, o.failing, polled_at,
                       version, o.error, digests.get(c.item_id) if o.error is None else None)
             for c, o, _, version, polled_at in batch
             if o.snapshot is None and not o.events and o.state == ItemState.ACTIVE]
    quiet_ids = {q.item_id for q in quiet}
    sqlite = session.get_bind().dialect.name == "sqlite"
    loud = [entry[0].item_id for entry in batch if sqlite or entry[0].item_id not in quiet_ids]
    leases = lock_leases(session, loud + list(lock_also))
    held = write_quiet(session, quiet, now=now, leases=leases)
    results: list[list[Event] | None] = []
    for claim, outcome, eids, version, polled_at in batch:
        if claim.item_id in quiet_ids:
            results.append([] if claim.item_id in held else None)
        elif leases.get(claim.item_id) != claim.lease_id:
            results.append(None)
        else:
            results.append(apply_outcome(session, claim, outcome, now=now, event_ids=eids, version=version,
                                         polled_at=polled_at, digest=digests.get(claim.item_id)))
    return results


def lock_leases(session: Session, ids: Sequence[int]) -> dict[int, int]:
    """Item id -> its current lease, for the items that exist. On PostgreSQL their schedules are
    locked until commit, in id order, before the items are written (worker.store.schedule's lock
    order); SQLite's writer holds the whole database already."""
    if not ids:
        return {}
    if session.get_bind().dialect.name == "sqlite":
        return sqlite_leases(session, padded(list(ids)))
    q = (select(Item.id, Schedule.lease_id).join(Schedule, Schedule.item_id == Item.id)
         .where(Item.id.in_(padded(list(ids)))).order_by(Item.id).with_for_update(of=Schedule))
    return {row.id: row.lease_id for row in session.execute(q)}


def apply_outcome(
    session: Session, claim: Claim, outcome: PollOutcome, *, now: datetime, event_ids: Sequence[str],
    version: str | None = None, polled_at: datetime | None = None, digest: str | None = None,
) -> list[Event] | None:
    """Write one poll's result: item schedule, new snapshot, events. All or nothing.

    The item row is updated only if ``claim`` still holds the lease; otherwise nothing is written
    and None is returned (the item was re-claimed, paused or untracked while we polled).
    ``digest``: that of the document a successful poll found, recorded if it stores no snapshot.

    Returns:
        The inserted events, or None when the lease was lost.
    """
    if len(event_ids) != len(outcome.events):
        raise ValueError("one event id per event is needed")
    if lock_leases(session, [claim.item_id]).get(claim.item_id) != claim.lease_id:
        return None
    values: dict[str, Any] = {
        "state": outcome.state.value, "consecutive_failures": outcome.consecutive_failures,
        "failing": outcome.failing, "last_polled_at": polled_at or now, "updated_at": now,
        "event_seq": Item.event_seq + len(outcome.events),
    }
    if outcome.error is None:
        values["last_success_at"] = polled_at or now
        values["version"] = version
    else:
        values["last_error"], values["last_error_at"] = outcome.error, polled_at or now
    if outcome.snapshot is not None:
        values["last_status"] = outcome.snapshot.status
        values["snapshot_digest"] = document_digest(outcome.snapshot)
    elif digest is not None and outcome.error is None:
        values["snapshot_digest"] = digest
    last_seq = session.execute(update(Item).where(Item.id == claim.item_id).values(**values)
                               .returning(Item.event_seq).execution_options(synchronize_session=False)).scalar_one()
    session.execute(update(Schedule).where(Schedule.item_id == claim.item_id)
                    .values(**polled(outcome.next_poll_at)).execution_options(synchronize_session=False))
    if outcome.snapshot is not None:
        doc = outcome.snapshot
        session.add(Snapshot(item_id=claim.item_id, taken_at=now, status=doc.status,
                             terminal=doc.terminal, fields=doc.fields, raw=doc.raw))
    first_seq = last_seq - len(outcome.events) + 1
    events = [Event(id=eid, item_id=claim.item_id, seq=first_seq + n, type=ev.type.value,
                    data=ev.data, created_at=now)
              for n, (eid, ev) in enumerate(zip(event_ids, outcome.events, strict=True))]
    session.add_all(events)
    session.flush()
    enqueue_deliveries(session, events, now=now)
    return events


def resync_event_seq(session: Session, item_id: int) -> None:
    """Move the item's event sequence past every event that names it, so new events fit."""
    highest = select(func.coalesce(func.max(Event.seq), 0)).where(Event.item_id == item_id).scalar_subquery()
    session.execute(update(Item).where(Item.id == item_id, Item.event_seq < highest).values(event_seq=highest)
                    .execution_options(synchronize_session=False))


def defer(session: Session, claim: Claim, until: datetime, *, now: datetime) -> bool:
    """Move a claimed item's next poll without polling it (rate limit, open breaker)."""
    return defer_many(session, [(claim, until)], now=now) == 1


def defer_many(session: Session, moves: Sequence[tuple[Claim, datetime]], *, now: datetime) -> int:
    """``defer`` for many claims in one statement; returns how many still held their lease."""
    if not moves:
        return 0
    table = _SCHEDULES
    stmt = (update(table).where(table.c.item_id == bindparam("b_id"), table.c.lease_id == bindparam("b_lease"))
            .values(next_poll_at=bindparam("b_until"), claims_since_poll=0))
    result = session.connection().execute(stmt, [{"b_id": c.item_id, "b_lease": c.lease_id, "b_until": until}
                                                  for c, until in moves])
    return int(result.rowcount)


def add_system_event(session: Session, event_id: str, etype: str, data: dict[str, Any], *, now: datetime) -> Event:
    """An event about a provider or a subscription, not an item (``provider.paused``,
    ``subscription.disabled``); it goes through the outbox like any other."""
    event = Event(id=event_id, item_id=None, seq=None, type=etype, data=data, created_at=now)
    session.add(event)
    session.flush()
    enqueue_deliveries(session, [event], now=now)
    return event


def latest_snapshot(session: Session, item_id: int) -> Snapshot | None:
    """The item's newest snapshot."""
    return session.scalar(select(Snapshot).where(Snapshot.item_id == item_id)
                          .order_by(Snapshot.id.desc()).limit(1))
