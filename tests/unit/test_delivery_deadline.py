"""When a delivery batch stops starting sends (issue 10: a chunk that outlived its lease was sent again whole)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.webhooks.decision import last_send_start

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_no_send_starts_within_one_timeout_of_the_deadline():
    """A 60 s lease and a 15 s timeout: sends start until 45 s in, so each ends before the lease does."""
    assert last_send_start(NOW + timedelta(seconds=60), NOW, 15) == NOW + timedelta(seconds=45)


def test_a_lease_shorter_than_the_timeout_still_sends_for_half_of_it():
    """A 3 s lease and a 10 s timeout (tests, tiny deployments): sends start during the first 1.5 s."""
    assert last_send_start(NOW + timedelta(seconds=3), NOW, 10) == NOW + timedelta(seconds=1.5)


def test_a_deadline_already_past_starts_nothing():
    assert last_send_start(NOW - timedelta(seconds=1), NOW, 15) == NOW - timedelta(seconds=1)
