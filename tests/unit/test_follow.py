"""Following the event stream across out-of-order commits."""

from __future__ import annotations

from worker.follow import FollowCursor


def test_contiguous_positions_advance_the_floor():
    """Seen positions are handed out once and the floor moves over them."""
    c = FollowCursor()
    assert c.accept([1, 2, 3]) == [1, 2, 3]
    c.settle(now=0, grace=10)
    assert c.floor == 3 and c.accept([2, 3]) == []


def test_hole_waits_for_a_late_commit():
    """Position 2 committing after 3 is still handed out."""
    c = FollowCursor()
    assert c.accept([1, 3]) == [1, 3]
    c.settle(now=0, grace=10)
    assert c.floor == 1
    assert c.accept([2, 3]) == [2]
    c.settle(now=1, grace=10)
    assert c.floor == 3


def test_permanent_hole_is_skipped_after_grace():
    """A rolled-back insert leaves a hole that is given up after the grace period."""
    c = FollowCursor()
    c.accept([1, 3])
    c.settle(now=0, grace=10)
    c.settle(now=5, grace=10)
    assert c.floor == 1
    c.settle(now=10, grace=10)
    assert c.floor == 3
    assert c.accept([4]) == [4]
