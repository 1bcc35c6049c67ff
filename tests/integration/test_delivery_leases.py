"""A delivery claim's lease (issue 13): held in ``leased_until``, so the claim moves no indexed
column. On PostgreSQL that makes it a heap-only (HOT) update, which writes no index entry; before,
each claimed row went into all six of the table's indexes (at 10,000,000 deliveries most of the
claim's time). The lease keeps its meaning: nobody else claims the delivery until it runs out, and
a chain's later events wait behind one that another worker holds.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text, update

from worker.store import delivery_claims
from worker.store.db import make_sessionmaker
from worker.store.models import Delivery, Event, Subscription

ITEMS, PER_ITEM = 3, 2


@pytest.fixture
def sessions(engine, clock):
    """A subscription with two due deliveries (a chain) for each of three items."""
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        sub = Subscription(kind="webhook", url="https://example.com/hook", state="active", created_at=clock(),
                           updated_at=clock())
        s.add(sub)
        s.flush()
        n = ITEMS * PER_ITEM
        s.execute(insert(Event), [{"position": p + 1, "id": f"evt_{p:026d}", "item_id": p // PER_ITEM + 1,
                                   "seq": p % PER_ITEM + 1, "type": "status.changed", "data": {},
                                   "created_at": clock()} for p in range(n)])
        s.execute(insert(Delivery), [{"subscription_id": sub.id, "event_position": p + 1, "item_id": p // PER_ITEM + 1,
                                      "state": "pending", "attempts": 0, "next_attempt_at": clock(), "lease_id": 0,
                                      "created_at": clock(), "updated_at": clock()} for p in range(n)])
    return sessions


def claim(sessions, at, limit=100):
    with sessions.begin() as s:
        return delivery_claims.claim_due(s, now=at, lease_s=60, limit=limit)


def test_a_claim_leases_without_moving_the_due_time_and_nobody_else_claims_until_it_runs_out(sessions, clock):
    due = clock()
    first = claim(sessions, due)
    assert len(first) == ITEMS * PER_ITEM and {c.lease_id for c in first} == {1}
    with sessions.begin() as s:
        rows = s.execute(select(Delivery.next_attempt_at, Delivery.leased_until)).all()
    assert rows == [(due, due + timedelta(seconds=60))] * len(first)
    assert claim(sessions, due + timedelta(seconds=59)) == []
    again = claim(sessions, due + timedelta(seconds=60))  # the worker was lost: its lease ran out
    assert sorted(c.delivery_id for c in again) == sorted(c.delivery_id for c in first)
    assert {c.lease_id for c in again} == {2}


def test_a_chain_waits_behind_an_event_another_worker_holds(sessions, clock):
    """Item 1's first delivery is free again, its second is held by another worker: a claim takes
    the first and stops there, as it stops at one in retry backoff."""
    with sessions.begin() as s:
        ids = s.scalars(select(Delivery.id).where(Delivery.item_id == 1).order_by(Delivery.event_position)).all()
        s.execute(update(Delivery).where(Delivery.id == ids[1]).values(leased_until=clock() + timedelta(seconds=30)))
    got = {c.delivery_id for c in claim(sessions, clock())}
    assert ids[0] in got and ids[1] not in got and len(got) == ITEMS * PER_ITEM - 1


# Heap-only updates are PostgreSQL's (SQLite rewrites the indexes of changed columns only).
@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_the_delivery_claim_writes_no_index_entry_on_postgresql(sessions, clock):
    with sessions.begin() as s:
        claims = delivery_claims.claim_due(s, now=clock(), lease_s=60, limit=100)
        # This transaction's own counts, before they are flushed to the cumulative statistics.
        updated, hot = s.execute(text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                                      "WHERE relname = 'deliveries'")).one()
        fillfactor = s.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'deliveries'"))
    assert len(claims) == updated == hot == ITEMS * PER_ITEM
    assert fillfactor == ["fillfactor=90"]


def test_a_downgrade_folds_the_leases_back_into_the_due_time(sessions, engine, clock):
    """Below 0017 a lease lives in ``next_attempt_at``: a delivery in flight during a downgrade
    must not become due at once under the older code (it would go out twice)."""
    from tests.integration.test_schedules import _downgrade
    from worker.store.migrate import upgrade

    claim(sessions, clock(), limit=ITEMS)  # the three heads
    _downgrade(engine, "0016")
    with engine.begin() as conn:
        due = conn.execute(text("SELECT next_attempt_at FROM deliveries ORDER BY id")).scalars().all()
    assert due[0] == due[2] == due[4] != due[1] == due[3] == due[5]  # the heads' leases, the followers' due time
    upgrade(engine)
    assert claim(sessions, clock()) == []  # the heads are held, so their chains wait
    assert len(claim(sessions, clock() + timedelta(seconds=60))) == ITEMS * PER_ITEM
