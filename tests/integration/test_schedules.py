"""The schedule in its own narrow table (issue 13, worker.store.schedule): the migration carries
every item's schedule over, a claim writes no item row, and a quiet poll's write to the item
changes no indexed column, so PostgreSQL updates it in place (HOT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import event, select, text

from tests.rows import update_items
from worker.domain import ItemState, PollOutcome, StatusDocument
from worker.store import repo
from worker.store.db import make_sessionmaker
from worker.store.migrate import alembic_config, upgrade
from worker.store.models import Item, Schedule

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _downgrade(engine, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_the_migration_moves_each_schedule_and_back(engine):
    """Items as revision 0014 kept them (schedule columns on ``items``) get a schedule row each:
    an active item leased mid-poll keeps its lease, due time and claims; a paused item's leftover
    claims are dropped (only active items may count as stuck). Downgrading puts them back."""
    _downgrade(engine, "0014")
    stamp = "'2026-12-01 12:00:00'" if engine.dialect.name == "sqlite" else "TIMESTAMPTZ '2026-12-01 12:00:00+00'"
    later = ("'2026-12-01 12:05:00'" if engine.dialect.name == "sqlite"
             else "TIMESTAMPTZ '2026-12-01 12:05:00+00'")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO items (id, provider, account, kind, ref, interval_s, state, next_poll_at, lease_id, "
            "consecutive_failures, failing, event_seq, claims_since_poll, due_since, created_at, updated_at) VALUES "
            f"(1, 'billit', 'default', 'order', '1', 60, 'active', {later}, 7, 0, false, 0, 2, {stamp}, {stamp}, "
            f"{stamp}), (2, 'billit', 'default', 'order', '2', 60, 'paused', NULL, 3, 0, false, 0, 1, NULL, {stamp}, "
            f"{stamp}), (3, 'amili_ada', 'default', 'case', 'c', 60, 'terminal', NULL, 0, 0, false, 0, 0, NULL, "
            f"{stamp}, {stamp})"))
    upgrade(engine)
    with make_sessionmaker(engine).begin() as s:
        got = {r.item_id: (r.provider, r.next_poll_at, r.lease_id, r.claims_since_poll, r.due_since)
               for r in s.scalars(select(Schedule))}
    assert got == {1: ("billit", T0 + timedelta(minutes=5), 7, 2, T0), 2: ("billit", None, 3, 0, None),
                   3: ("amili_ada", None, 0, 0, None)}
    _downgrade(engine, "0014")
    with engine.begin() as conn:
        back = conn.execute(text("SELECT id, lease_id, claims_since_poll FROM items ORDER BY id")).all()
    assert [tuple(r) for r in back] == [(1, 7, 2), (2, 3, 0), (3, 0, 0)]
    upgrade(engine)


def _statements(engine) -> list[str]:
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cur, sql, *a: sent.append(" ".join(sql.split())))
    return sent


def test_a_claim_writes_only_schedules_and_a_quiet_poll_updates_its_item_in_place(engine, clock):
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        for n in range(5):
            repo.add_item(s, provider="billit", account="default", kind="order", ref=str(n), interval_s=60,
                          now=clock())
    created = clock()
    sent = _statements(engine)
    with sessions.begin() as s:
        claims = repo.claim_due(s, now=clock(), lease_s=30, limit=10)
    clock.advance(5)
    assert len(claims) == 5
    assert not [q for q in sent if q.upper().startswith(("UPDATE ITEMS", "INSERT INTO ITEMS"))], sent

    quiet = PollOutcome(state=ItemState.ACTIVE, next_poll_at=clock() + timedelta(seconds=60),
                        consecutive_failures=0, failing=False, events=[])
    with sessions.begin() as s:
        written = repo.apply_outcomes(s, [(c, quiet, [], 'W/"1"', clock()) for c in claims], now=clock())
        if engine.dialect.name == "postgresql":  # this transaction's own counts, before commit
            updated, hot = s.execute(text(
                "SELECT pg_stat_get_xact_tuples_updated('items'::regclass), "
                "pg_stat_get_xact_tuples_hot_updated('items'::regclass)")).one()
            assert (updated, hot) == (5, 5)
    assert written == [[]] * 5
    with sessions.begin() as s:
        items = s.scalars(select(Item).order_by(Item.id)).all()
        assert {(i.next_poll_at, i.claims_since_poll, i.due_since, i.version, i.last_polled_at, i.updated_at)
                for i in items} == {(clock() + timedelta(seconds=60), 0, None, 'W/"1"', clock(), created)}


def test_a_written_poll_uses_its_lease_up(engine, clock):
    """A late duplicate of a claim already written (a redelivered chunk) writes nothing, quiet or
    not: the write moved the lease on. A quiet success that ends failures moves updated_at."""
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        for n in range(3):
            repo.add_item(s, provider="billit", account="default", kind="order", ref=str(n), interval_s=60,
                          now=clock())
        update_items(s, Item.id == 2, consecutive_failures=2)
        claims = repo.claim_due(s, now=clock(), lease_s=30, limit=10)
    clock.advance(5)
    quiet = PollOutcome(state=ItemState.ACTIVE, next_poll_at=clock() + timedelta(seconds=60),
                        consecutive_failures=0, failing=False, events=[])
    finished = PollOutcome(state=ItemState.TERMINAL, next_poll_at=None, consecutive_failures=0, failing=False,
                           events=[], snapshot=StatusDocument("paid", True, {"status": "paid"}))
    batch = [(claims[0], quiet, [], None, clock()), (claims[1], quiet, [], None, clock()),
             (claims[2], finished, [], None, clock())]
    with sessions.begin() as s:
        assert repo.apply_outcomes(s, batch, now=clock()) == [[], [], []]
    with sessions.begin() as s:
        assert repo.apply_outcomes(s, batch, now=clock()) == [None, None, None]
        assert repo.apply_outcome(s, claims[2], quiet, now=clock(), event_ids=[]) is None
        assert repo.defer(s, claims[2], clock(), now=clock()) is False
    with sessions.begin() as s:
        got = [(i.state, i.next_poll_at, i.updated_at) for i in s.scalars(select(Item).order_by(Item.id))]
    assert got == [("active", clock() + timedelta(seconds=60), clock() - timedelta(seconds=5)),
                   ("active", clock() + timedelta(seconds=60), clock()),  # its failures ended
                   ("terminal", None, clock())]


def test_a_pause_moves_on_a_lease_handed_out_after_the_item_was_read(engine, clock):
    """An item read by a request before a claim committed is locked and read afresh when paused:
    the pause moves the lease past the claim's, so the poll under way cannot write after it."""
    if engine.dialect.name == "sqlite":
        pytest.skip("SQLite serializes writers: no claim can commit while the pausing transaction is open")
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        repo.add_item(s, provider="billit", account="default", kind="order", ref="1", interval_s=60, now=clock())
    with sessions.begin() as pausing:
        stale = pausing.get(Item, 1)
        assert stale is not None and stale.lease_id == 0
        with sessions.begin() as s:
            (claim,) = repo.claim_due(s, now=clock(), lease_s=30, limit=10)
        assert claim.lease_id == 1
        repo.set_paused(pausing, 1, True, now=clock())
    quiet = PollOutcome(state=ItemState.ACTIVE, next_poll_at=clock() + timedelta(seconds=60),
                        consecutive_failures=0, failing=False, events=[])
    with sessions.begin() as s:
        assert repo.apply_outcomes(s, [(claim, quiet, [], None, clock())], now=clock()) == [None]
    with sessions.begin() as s:
        item = s.get(Item, 1)
        assert item is not None
        assert (item.state, item.next_poll_at, item.lease_id, item.claims_since_poll, item.due_since) == (
            "paused", None, 2, 0, None)


def test_a_query_naming_a_schedule_column_on_item_is_refused():
    """``Item.next_poll_at`` in a query would compare a Python object, silently ``WHERE false``:
    named on the class, the schedule's attributes refuse and name the column to use."""
    with pytest.raises(AttributeError, match=r"Schedule\.next_poll_at"):
        select(Item.id).where(Item.next_poll_at.is_(None))  # type: ignore[union-attr]
