"""worker.store.quiet writes the polls that changed nothing (most polls) in one statement per
table, on PostgreSQL from unnest() and on SQLite through the driver's executemany: on both
databases each column gets what the poll found, in the format every other write stores, an item
whose lease moved on is left alone, and a success after failures ends them."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, text

from worker.store import repo
from worker.store.models import Item, Schedule
from worker.store.quiet import QuietPoll, write_quiet


def claims(stack) -> dict[int, repo.Claim]:
    stack.clock.advance(3600)
    with stack.sessions.begin() as s:
        return {c.item_id: c for c in repo.claim_due(s, now=stack.clock(), lease_s=30, limit=100)}


def write(stack, polls: list[QuietPoll]) -> set[int]:
    with stack.sessions.begin() as s:
        leases = repo.lock_leases(s, [p.item_id for p in polls])
        return write_quiet(s, polls, now=stack.clock(), leases=leases)


def state(stack, item_id: int) -> tuple[Item, Schedule]:
    with stack.sessions.begin() as s:
        return s.get_one(Item, item_id), s.get_one(Schedule, item_id)


def odd(at: datetime, seconds: float) -> datetime:
    """A moment with microseconds, so a format that drops or rounds them shows."""
    return at + timedelta(seconds=seconds, microseconds=123_457)


def test_success_and_failure_are_recorded_as_found(stack, engine):
    good, bad = stack.orders(2, stages=0)
    before = {i: state(stack, i) for i in (good, bad)}
    c = claims(stack)
    now = stack.clock()
    polled, nxt = odd(now, -2), odd(now, 300)
    held = write(stack, [
        QuietPoll(good, c[good].lease_id, nxt, 0, False, polled, 'W/"v2"', None, digest="d" * 32),
        QuietPoll(bad, c[bad].lease_id, nxt, 3, False, polled, None, "timed out after 5s"),
    ])
    assert held == {good, bad}
    item, sched = state(stack, good)
    assert (item.last_polled_at, item.last_success_at, item.version, item.snapshot_digest) == (
        polled, polled, 'W/"v2"', "d" * 32)
    assert (item.consecutive_failures, item.failing, item.last_error) == (0, False, None)
    assert item.updated_at == before[good][0].updated_at  # a quiet success rewrites no indexed column
    assert (sched.next_poll_at, sched.lease_id, sched.claims_since_poll, sched.due_since) == (
        nxt, c[good].lease_id + 1, 0, None)
    item, sched = state(stack, bad)
    was = before[bad][0]
    assert (item.last_error, item.last_error_at, item.consecutive_failures, item.failing, item.updated_at) == (
        "timed out after 5s", polled, 3, False, now)
    assert (item.version, item.last_success_at, item.snapshot_digest) == (
        was.version, was.last_success_at, was.snapshot_digest)
    assert sched.next_poll_at == nxt and sched.lease_id == c[bad].lease_id + 1
    if engine.dialect.name == "sqlite":  # compared as text by every query: one format
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT next_poll_at FROM item_schedules WHERE item_id = :i"), {"i": good})
            assert stored.scalar_one() == nxt.strftime("%Y-%m-%d %H:%M:%S.%f")

    c = claims(stack)
    now = stack.clock()
    write(stack, [QuietPoll(bad, c[bad].lease_id, odd(now, 60), 0, False, now, 'W/"v3"', None),
                  QuietPoll(good, c[good].lease_id, odd(now, 60), 0, False, now, 'W/"v3"', None)])
    item, _ = state(stack, bad)  # the success ends the failures, and says so in updated_at
    assert (item.consecutive_failures, item.failing, item.updated_at, item.last_success_at) == (0, False, now, now)
    assert item.last_error == "timed out after 5s"  # the last error stays on record
    item, _ = state(stack, good)
    assert item.snapshot_digest == "d" * 32  # no digest given: the recorded one stays


def test_an_item_whose_lease_moved_on_is_left_alone(stack):
    (item_id,) = stack.orders(1, stages=0)
    stale = claims(stack)[item_id]
    fresh = claims(stack)[item_id]  # claimed again: the lease moved on
    assert fresh.lease_id != stale.lease_id
    before = state(stack, item_id)
    now = stack.clock()
    assert write(stack, [QuietPoll(item_id, stale.lease_id, odd(now, 60), 4, True, now, None, "boom")]) == set()
    after = state(stack, item_id)
    assert (after[0].last_error, after[0].consecutive_failures, after[1].lease_id, after[1].next_poll_at) == (
        before[0].last_error, before[0].consecutive_failures, before[1].lease_id, before[1].next_poll_at)
    with stack.sessions.begin() as s:
        assert s.scalar(select(Schedule.lease_id).where(Schedule.item_id == item_id)) == fresh.lease_id
