"""Backoff arithmetic and Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.backoff import MAX_RETRY_AFTER_S, failure_delay, parse_retry_after, success_delay

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("attempt", "rand", "expected"), [
    (1, 0.0, 5.0), (1, 0.999999, 9.99999), (2, 0.0, 10.0), (3, 0.5, 30.0),
    (10, 0.0, 50.0), (10, 1.0, 100.0), (10_000, 0.0, 50.0),
])
def test_failure_delay_is_capped_exponential_with_equal_jitter(attempt, rand, expected):
    """base 10, cap 100: delay in [ceiling/2, ceiling], ceiling = min(cap, 10 * 2**(n-1))."""
    assert failure_delay(attempt, base=10, cap=100, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize(("retry_after", "expected"), [
    (None, 5.0), (2.0, 5.0), (120.0, 120.0), (10 ** 9, MAX_RETRY_AFTER_S),
])
def test_retry_after_is_a_floor(retry_after, expected):
    """We never come back before the provider's Retry-After (bounded against absurd values)."""
    assert failure_delay(1, base=10, cap=100, rand=0.0, retry_after=retry_after) == expected


def test_failure_delay_rejects_attempt_zero():
    """Attempts count from 1."""
    with pytest.raises(ValueError, match="attempt"):
        failure_delay(0, base=1, cap=2, rand=0)


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 100.0), (0.5, 95.0), (1.0, 90.0)])
def test_success_delay_spreads_below_interval(rand, expected):
    """The interval less up to jitter_ratio of it: never later than asked (issue 12)."""
    assert success_delay(100, jitter_ratio=0.1, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize(("header", "expected"), [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0),
    ("Mon, 23 Nov 2026 12:01:00 GMT", 60.0),
    ("Mon, 23 Nov 2026 11:00:00 GMT", 0.0),
    ("soon", None), ("", None), (None, None), ("-5", None),
])
def test_parse_retry_after(header, expected):
    """Delta-seconds or an HTTP date; garbage is ignored."""
    assert parse_retry_after(header, now=NOW) == expected
