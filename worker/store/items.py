"""Repository functions for the item catalog: bulk upsert, filtered pages, labels, snapshots.

Each takes a Session and never commits: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from worker.domain import ItemState
from worker.store.db import insert_for
from worker.store.models import Item, ItemLabel, Schedule, Snapshot
from worker.store.repo import Claim, lock_leases

#: Rows per statement: SQLite allows 32,766 bound parameters; an item identity takes four.
CHUNK = 500

Identity = tuple[str, str, str, str]  # provider, account, kind, ref


@dataclass(frozen=True)
class Upsert:
    """One validated item to create, or to update when its identity is already tracked.

    ``None`` in ``interval_s``, ``labels`` or ``external_id`` means "leave as it is" on update
    (and the default, no labels, no external id on create).
    """

    identity: Identity
    interval_s: float | None
    default_interval_s: float
    labels: dict[str, str] | None = None
    external_id: str | None = None


def upsert_items(session: Session, rows: Sequence[Upsert], *, now: datetime) -> list[tuple[int, bool]]:
    """Create or update each row; returns ``(id, created)`` per row, in order.

    The same identity twice in ``rows`` is one item: the first creates it, the later ones update
    it. A row another writer inserted meanwhile is found by the unique constraint (insert or
    nothing) and updated, so concurrent upserts never make a second row.
    """
    ids = _existing_ids(session, {r.identity for r in rows})
    first: dict[Identity, int] = {}
    fresh: list[Upsert] = []
    for n, r in enumerate(rows):
        if r.identity not in ids and r.identity not in first:
            first[r.identity] = n
            fresh.append(r)
    inserted = _insert_new(session, fresh, now=now)
    lost = [r.identity for r in fresh if r.identity not in inserted]
    ids.update(inserted)
    if lost:  # inserted by a concurrent writer between our read and our insert
        ids.update(_existing_ids(session, set(lost)))
    created_at = {identity: first[identity] for identity in inserted}
    updates = [(ids[r.identity], r) for n, r in enumerate(rows) if created_at.get(r.identity) != n]
    _apply_updates(session, updates, now=now)
    return [(ids[r.identity], created_at.get(r.identity) == n) for n, r in enumerate(rows)]


def _existing_ids(session: Session, identities: set[Identity]) -> dict[Identity, int]:
    found: dict[Identity, int] = {}
    key = tuple_(Item.provider, Item.account, Item.kind, Item.ref)
    todo = sorted(identities)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        for id_, *identity in session.execute(
                select(Item.id, Item.provider, Item.account, Item.kind, Item.ref).where(key.in_(chunk))):
            found[tuple(identity)] = id_  # type: ignore[index]
    return found


def _insert_new(session: Session, rows: Sequence[Upsert], *, now: datetime) -> dict[Identity, int]:
    """Insert ``rows`` (insert-or-nothing on the identity); returns the ids of those inserted."""
    if not rows:
        return {}
    dialect_insert = insert_for(session)
    values = [{
        "provider": r.identity[0], "account": r.identity[1], "kind": r.identity[2], "ref": r.identity[3],
        "interval_s": r.interval_s if r.interval_s is not None else r.default_interval_s,
        "state": ItemState.ACTIVE.value, "consecutive_failures": 0,
        "failing": False, "event_seq": 0, "labels": r.labels or {},
        "external_id": r.external_id, "created_at": now, "updated_at": now,
    } for r in rows]
    # A Core statement executed with the list of rows: SQLAlchemy batches it into multi-row
    # INSERTs ("insertmanyvalues") and compiles it once. An ORM insert with .values(list) compiled
    # every chunk afresh: 10,000 items took 3.4 s instead of about half a second.
    table: Any = Item.__table__
    stmt = (dialect_insert(table).on_conflict_do_nothing(index_elements=["provider", "account", "kind", "ref"])
            .returning(table.c.id, table.c.provider, table.c.account, table.c.kind, table.c.ref))
    inserted: dict[Identity, int] = {}
    for id_, *identity in session.connection().execute(stmt, values):
        inserted[tuple(identity)] = id_
    if inserted:  # each new item's schedule: due now
        session.connection().execute(insert(Schedule.__table__), [  # type: ignore[arg-type]
            {"item_id": id_, "provider": identity[0], "next_poll_at": now, "lease_id": 0, "claims_since_poll": 0}
            for identity, id_ in inserted.items()])
    labelled = [(inserted[r.identity], r.labels) for r in rows if r.labels and r.identity in inserted]
    _insert_labels(session, labelled)
    return inserted


def _apply_updates(session: Session, updates: Sequence[tuple[int, Upsert]], *, now: datetime) -> None:
    changing = [(id_, r) for id_, r in updates
                if r.interval_s is not None or r.labels is not None or r.external_id is not None]
    if not changing:
        return
    items = {i.id: i for i in load_items(session, {id_ for id_, _ in changing}, lock=True)}
    relabel: dict[int, dict[str, str]] = {}
    for id_, r in changing:
        item = items[id_]
        if r.interval_s is not None:
            set_interval(item, r.interval_s, now=now)
        if r.external_id is not None:
            item.external_id = r.external_id
        if r.labels is not None:
            item.labels = dict(r.labels)
            relabel[id_] = r.labels
        item.updated_at = now
    session.flush()
    replace_labels(session, relabel)


def set_interval(item: Item, interval_s: float, *, now: datetime) -> None:
    """A new interval. A shorter one takes effect now: an item scheduled beyond ``now + interval``
    is moved up, unless a poll holds it (a lease is out), which must not be polled twice."""
    item.interval_s = interval_s
    due_by = now + timedelta(seconds=interval_s)
    if (item.state == ItemState.ACTIVE.value and item.claims_since_poll == 0 and item.next_poll_at is not None
            and item.next_poll_at > due_by):
        item.next_poll_at = due_by


def load_items(session: Session, ids: Iterable[int], *, lock: bool = False) -> list[Item]:
    """The items with these ids (those that exist). With ``lock``, locked with their schedules in
    id order (repo.lock_leases) and read afresh, for a change of their schedule."""
    todo = sorted(ids)
    out: list[Item] = []
    for start in range(0, len(todo), CHUNK * 4):
        part = todo[start:start + CHUNK * 4]
        if lock:
            lock_leases(session, part)
        query = select(Item).where(Item.id.in_(part))
        out.extend(session.scalars(query.execution_options(populate_existing=True) if lock else query))
    return out


def replace_labels(session: Session, labels: dict[int, dict[str, str]]) -> None:
    """Make the label rows of each item exactly ``labels[item_id]``."""
    todo = sorted(labels)
    for start in range(0, len(todo), CHUNK * 4):
        session.execute(delete(ItemLabel).where(ItemLabel.item_id.in_(todo[start:start + CHUNK * 4])))
    _insert_labels(session, [(id_, labels[id_]) for id_ in todo])


def _insert_labels(session: Session, labelled: Sequence[tuple[int, dict[str, str] | None]]) -> None:
    rows = [{"item_id": id_, "key": k, "value": v} for id_, labels in labelled for k, v in (labels or {}).items()]
    if rows:
        session.connection().execute(insert(ItemLabel.__table__), rows)  # type: ignore[arg-type]


def page_items(
    session: Session, *, after_id: int, limit: int, provider: str | None = None, account: str | None = None,
    kind: str | None = None, state: str | None = None, external_id: str | None = None,
    labels: Sequence[tuple[str, str]] = (),
) -> list[Item]:
    """Up to ``limit`` items with an id above ``after_id``, in id order, matching every filter.

    Ids only grow (AUTOINCREMENT), so a client following the last id sees every item that existed
    when it started exactly once, and items added meanwhile at the end.
    """
    q = select(Item).where(Item.id > after_id)
    for column, value in ((Item.provider, provider), (Item.account, account), (Item.kind, kind),
                          (Item.state, state), (Item.external_id, external_id)):
        if value is not None:
            q = q.where(column == value)
    for key, value in labels:
        q = q.where(Item.id.in_(select(ItemLabel.item_id).where(ItemLabel.key == key, ItemLabel.value == value)))
    return list(session.scalars(q.order_by(Item.id).limit(limit)))


def page_snapshots(session: Session, item_id: int, *, before_id: int | None, limit: int) -> list[Snapshot]:
    """An item's snapshots, newest first, below ``before_id`` when given."""
    q = select(Snapshot).where(Snapshot.item_id == item_id)
    if before_id is not None:
        q = q.where(Snapshot.id < before_id)
    return list(session.scalars(q.order_by(Snapshot.id.desc()).limit(limit)))


def poll_now(item: Item, *, now: datetime) -> bool:
    """Make an active item due now. False when a poll already holds it (it is being polled)."""
    if item.claims_since_poll > 0 and item.next_poll_at is not None and item.next_poll_at > now:
        return False
    item.next_poll_at = now
    item.updated_at = now
    return True



def make_due(session: Session, provider: str, account: str, named: Iterable[tuple[str, str]], *,
             now: datetime) -> list[int]:
    """Make the active items named by ``(kind, ref)`` due now, their lease moved on (a poll under
    way then cannot store its possibly older answer); returns their ids. A push or a sweep's hint."""
    keys = sorted(set(named))
    if not keys:
        return []
    wanted = select(Item.id).where(Item.provider == provider, Item.account == account,
                                   Item.state == ItemState.ACTIVE.value, tuple_(Item.kind, Item.ref).in_(keys))
    # Only the schedules are written (and locked, in id order). Their own next_poll_at, never NULL
    # while the item is active, is checked as each is locked: a pause committed meanwhile is seen.
    ids = sorted(session.scalars(wanted))
    rows = session.execute(
        update(Schedule).where(Schedule.item_id.in_(ids), Schedule.next_poll_at.is_not(None))
        .values(next_poll_at=now, lease_id=Schedule.lease_id + 1)
        .returning(Schedule.item_id).execution_options(synchronize_session=False))
    return sorted(row.item_id for row in rows)


def claim_named(session: Session, provider: str, account: str, named: Iterable[tuple[str, str]], *,
                fresh: Callable[[tuple[str, str], str | None], bool], now: datetime,
                lease_s: float) -> tuple[list[Claim], int]:
    """Claim the active items named by ``(kind, ref)`` as the dispatch claims due ones (their
    lease moved on, so a poll under way cannot store its answer), for a sweep that stores what the
    provider listed (worker.listed). An item for which ``fresh(key, its stored version)`` is False
    (listed at the version already read) is left alone. Returns the claims, and how many were
    left so."""
    keys = set(named)
    if not keys:
        return [], 0
    # Their schedules locked in id order, as a chunk's write locks them: two never wait on each other.
    wanted = select(Item.id, Item.kind, Item.ref, Item.version).join(Schedule, Schedule.item_id == Item.id).where(
        Item.provider == provider, Item.account == account, Item.state == ItemState.ACTIVE.value,
        tuple_(Item.kind, Item.ref).in_(sorted(keys))).order_by(Item.id)
    if session.get_bind().dialect.name == "postgresql":
        wanted = wanted.with_for_update(of=Schedule)
    rows = session.execute(wanted).all()
    chosen = [r.id for r in rows if fresh((r.kind, r.ref), r.version)]
    if not chosen:
        return [], len(rows)
    claimed = session.execute(
        update(Schedule).where(Schedule.item_id.in_(chosen))
        .values(next_poll_at=now + timedelta(seconds=lease_s), lease_id=Schedule.lease_id + 1,
                claims_since_poll=Schedule.claims_since_poll + 1, due_since=func.coalesce(Schedule.due_since, now))
        .returning(Schedule.item_id, Schedule.lease_id).execution_options(synchronize_session=False))
    claims = sorted((Claim(row.item_id, row.lease_id) for row in claimed), key=lambda c: c.item_id)
    return claims, len(rows) - len(chosen)


def differing(session: Session, provider: str, account: str, listed: Mapping[tuple[str, str], Any], *,
              kinds: Sequence[str], listed_statuses: Collection[str]) -> tuple[list[tuple[str, str]], int]:
    """A full sweep's comparison (worker.sweeps): the account's active items of ``kinds`` whose
    listed document (a StatusDocument, by ``(kind, ref)``) differs from their latest snapshot, or
    that are missing from the list although their snapshot's status is one the list holds (they
    left it: closed, paused), or that have no snapshot yet. Returns those, and how many were listed
    unchanged."""
    latest = select(func.max(Snapshot.id)).where(Snapshot.item_id == Item.id).correlate(Item).scalar_subquery()
    rows = session.execute(
        select(Item.kind, Item.ref, Snapshot.status, Snapshot.terminal, Snapshot.fields)
        .outerjoin(Snapshot, Snapshot.id == latest)
        .where(Item.provider == provider, Item.account == account, Item.kind.in_(list(kinds)),
               Item.state == ItemState.ACTIVE.value))
    out, unchanged = [], 0
    for kind, ref, status, terminal, fields in rows:
        doc = listed.get((kind, ref))
        if doc is None:
            if status is None or status in listed_statuses:
                out.append((kind, ref))
        elif status is None or (doc.status, doc.terminal, doc.fields) != (status, terminal, fields):
            out.append((kind, ref))
        else:
            unchanged += 1
    return out, unchanged


def discover(session: Session, provider: str, account: str, named: Iterable[tuple[str, str]], *,
             labels: dict[str, str], interval_s: float, now: datetime) -> list[int]:
    """Track the items named that are not tracked yet (insert-or-nothing: an item already there,
    finished or not, is left as it is), due now; returns the ids of those made."""
    rows = [Upsert((provider, account, kind, ref), None, interval_s, dict(labels))
            for kind, ref in dict.fromkeys(named)]
    return sorted(_insert_new(session, rows, now=now).values())
