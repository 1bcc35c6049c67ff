"""The store on real databases: claims, leases, duplicate tracking, migrations."""

from __future__ import annotations

import threading
import warnings
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, select

from tests.rows import update_items
from worker.domain import EventType, ItemState, NewEvent, PollOutcome, StatusDocument
from worker.errors import DuplicateItemError
from worker.store import repo
from worker.store.db import make_sessionmaker
from worker.store.migrate import upgrade
from worker.store.models import Base, Event, Item, Snapshot


def _add(sessions, clock, n, *, due_in=0.0, start=0):
    with sessions.begin() as s:
        for i in range(start, start + n):
            item = repo.add_item(s, provider="billit", account="default", kind="order", ref=str(1000 + i),
                                 interval_s=60, now=clock())
            item.next_poll_at = clock() + timedelta(seconds=due_in)


DUE = "ix_item_schedules_due"


def test_migrations_match_models(engine):
    """Alembic's migrations produce exactly the schema the models describe."""
    with engine.connect() as conn, warnings.catch_warnings():
        # Neither SQLAlchemy nor Alembic reflects an index on an expression: the due index is
        # compared by its definition below instead.
        warnings.filterwarnings("ignore", f"Skipped unsupported reflection of expression-based index {DUE}")
        warnings.filterwarnings("ignore", f"autogenerate skipping metadata-specified expression-based index '{DUE}'")
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        if engine.dialect.name == "postgresql":
            made = conn.exec_driver_sql(f"SELECT indexdef FROM pg_indexes WHERE indexname = '{DUE}'").scalar()
        else:
            made = conn.exec_driver_sql(f"SELECT sql FROM sqlite_master WHERE name = '{DUE}'").scalar()
    assert diffs == []
    assert made is not None and "coalesce(due_since, next_poll_at), next_poll_at" in made.lower(), made


def test_a_current_schema_is_left_alone(engine):
    """Every daemon start calls upgrade: on a schema already current it sends nothing but the
    version check (the SQLite foreign-key check after a migration reads every row of every table)."""
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        upgrade(engine)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert any("alembic_version" in s for s in sent)
    assert not [s for s in sent if "foreign_key" in s.lower()
                or s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP", "UPDATE", "INSERT", "DELETE"))]


def test_duplicate_track_is_refused(engine, clock):
    """The same provider+account+kind+ref cannot be tracked twice."""
    sessions = make_sessionmaker(engine)
    _add(sessions, clock, 1)
    with pytest.raises(DuplicateItemError, match="already tracked as item 1"), sessions.begin() as s:
        repo.add_item(s, provider="billit", account="default", kind="order", ref="1000", interval_s=5,
                      now=clock())
    with sessions.begin() as s:
        assert len(repo.list_items(s)) == 1


def test_claim_takes_due_items_most_overdue_first_and_leases_them(engine, clock):
    """Only due items are claimed; they move one lease ahead and get a new lease id."""
    sessions = make_sessionmaker(engine)
    _add(sessions, clock, 3, due_in=-30)
    _add(sessions, clock, 2, due_in=-60, start=3)
    _add(sessions, clock, 4, due_in=+30, start=5)
    with sessions.begin() as s:
        claims = repo.claim_due(s, now=clock(), lease_s=120, limit=4)
    # The two most overdue (items 4 and 5) are always among the four claimed.
    assert {4, 5} <= {c.item_id for c in claims} <= {1, 2, 3, 4, 5}
    assert len(claims) == 4 and all(c.lease_id == 1 for c in claims)
    with sessions.begin() as s:
        rest = repo.claim_due(s, now=clock(), lease_s=120, limit=100)
        assert len(rest) == 1  # the fifth overdue item; the future ones are not due
        leased = s.scalars(select(Item).where(Item.id.in_([c.item_id for c in claims]))).all()
        assert all(i.next_poll_at == clock() + timedelta(seconds=120) for i in leased)
    with sessions.begin() as s:
        assert repo.claim_due(s, now=clock() + timedelta(seconds=29), lease_s=120, limit=100) == []
    with sessions.begin() as s:
        again = repo.claim_due(s, now=clock() + timedelta(seconds=121), lease_s=120, limit=100)
    leased_before = {c.item_id for c in claims + rest}
    assert {c.item_id for c in again} == set(range(1, 10))
    assert all(c.lease_id == (2 if c.item_id in leased_before else 1) for c in again)


def test_concurrent_claims_are_disjoint(engine, clock):
    """Four dispatchers at once never claim the same item in one round."""
    sessions = make_sessionmaker(engine)
    _add(sessions, clock, 400, due_in=-1)
    claimed: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def dispatcher(slot: int) -> None:
        barrier.wait()
        while True:
            with sessions.begin() as s:
                got = repo.claim_due(s, now=clock(), lease_s=300, limit=25)
            if not got:
                return
            claimed[slot].extend(c.item_id for c in got)

    threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for part in claimed for i in part]
    assert len(everything) == 400 and len(set(everything)) == 400


def test_stale_lease_writes_nothing(engine, clock):
    """A poll whose lease was superseded cannot write its snapshot or events."""
    sessions = make_sessionmaker(engine)
    _add(sessions, clock, 1, due_in=-1)
    with sessions.begin() as s:
        (first,) = repo.claim_due(s, now=clock(), lease_s=10, limit=10)
    with sessions.begin() as s:
        (second,) = repo.claim_due(s, now=clock() + timedelta(seconds=11), lease_s=10, limit=10)
    outcome = PollOutcome(ItemState.ACTIVE, clock(), 0, False,
                          [NewEvent(EventType.OBSERVED, {"status": "x"})], StatusDocument("x", False, {}))
    with sessions.begin() as s:
        assert repo.apply_outcome(s, first, outcome, now=clock(), event_ids=["evt_a"]) is None
    with sessions.begin() as s:
        assert s.scalars(select(Event)).all() == [] and s.scalars(select(Snapshot)).all() == []
    with sessions.begin() as s:
        written = repo.apply_outcome(s, second, outcome, now=clock(), event_ids=["evt_b"])
    assert [(e.id, e.seq) for e in written] == [("evt_b", 1)]


def test_event_sequence_numbers_are_per_item(engine, clock):
    """Each item's events are numbered 1, 2, 3... in the order written."""
    sessions = make_sessionmaker(engine)
    _add(sessions, clock, 2, due_in=-1)
    for round_ in range(2):
        with sessions.begin() as s:
            claims = repo.claim_due(s, now=clock() + timedelta(seconds=round_ * 100), lease_s=10, limit=10)
        for claim in claims:
            outcome = PollOutcome(ItemState.ACTIVE, clock(), 0, False, [
                NewEvent(EventType.CHANGED, {}), NewEvent(EventType.CHANGED, {})])
            with sessions.begin() as s:
                repo.apply_outcome(s, claim, outcome, now=clock(),
                                   event_ids=[f"evt_{claim.item_id}_{round_}_{k}" for k in range(2)])
    with sessions.begin() as s:
        rows = s.execute(select(Event.item_id, Event.seq).order_by(Event.position)).all()
    assert sorted(rows) == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4)]


def test_finished_items_leave_the_due_index(engine, clock):
    """Terminal, paused and gone items have no next_poll_at and are never claimed."""
    sessions = make_sessionmaker(engine)
    _add(sessions, clock, 3, due_in=-1)
    with sessions.begin() as s:
        repo.set_paused(s, 1, True, now=clock())
        update_items(s, Item.id == 2, state="terminal", next_poll_at=None)
    with sessions.begin() as s:
        assert [c.item_id for c in repo.claim_due(s, now=clock(), lease_s=10, limit=10)] == [3]
        paused = repo.get_item(s, 1)
        assert paused.state == "paused" and paused.next_poll_at is None and paused.lease_id == 1
