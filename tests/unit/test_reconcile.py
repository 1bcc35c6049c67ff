"""The pure rules of worker.reconcile: when a sweep stands in for polls, and for how long."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.reconcile import DEGRADED_AFTER, SPREAD_STEPS, SWEEP_LEASE_S, effective_interval, healthy, spread_next

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_healthy_after_a_recent_success_with_fewer_than_the_degraded_failures():
    assert healthy(ago(5), 0, 10, NOW)
    assert healthy(ago(5), DEGRADED_AFTER - 1, 10, NOW)
    assert not healthy(ago(5), DEGRADED_AFTER, 10, NOW)
    assert not healthy(None, 0, 10, NOW)  # never read the whole list


def test_a_success_grows_old_after_four_intervals_or_one_lease_whichever_is_longer():
    assert healthy(ago(SWEEP_LEASE_S), 0, 10, NOW) and not healthy(ago(SWEEP_LEASE_S + 1), 0, 10, NOW)
    assert healthy(ago(4 * 600), 0, 600, NOW) and not healthy(ago(4 * 600 + 1), 0, 600, NOW)


def test_the_effective_interval_is_the_longer_one_only_while_healthy():
    assert effective_interval(60, 3600, True) == 3600
    assert effective_interval(60, 3600, False) == 60
    assert effective_interval(7200, 3600, True) == 7200  # never shorter than the item's own
    assert effective_interval(60, None, True) == 60


def test_pulled_in_items_are_spread_over_their_own_interval():
    times = [spread_next(item_id, 60, NOW) for item_id in range(1, 2 * SPREAD_STEPS)]
    assert all(NOW <= t < NOW + timedelta(seconds=60) for t in times)
    firsts = {int((t - NOW).total_seconds()) for t in times}
    assert len(firsts) == 60  # every second of the interval gets some
