"""worker.webhooks.decision: what an attempt's result means. Pure: time and randomness passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.domain import AttemptResult
from worker.webhooks.decision import (
    REFUSED_RETRY_S,
    SVIX_SCHEDULE,
    classify,
    decide,
    last_send_start,
    should_disable,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def run(attempt: int, result: AttemptResult, schedule: tuple[float, ...] = SVIX_SCHEDULE, rand: float = 0.5):
    # rand 0.5 puts the jitter at zero: the delay is the schedule's step exactly.
    return decide(attempt, result, now=NOW, schedule=schedule, jitter_ratio=0.1, rand=rand)


@pytest.mark.parametrize(("result", "fault"), [
    (AttemptResult(200, 1.0), None),
    (AttemptResult(204, 1.0), None),
    (AttemptResult(None, 0.0, refused=True), "policy"),
    (AttemptResult(None, 30.0, error="timeout"), "unavailable"),
    (AttemptResult(429, 1.0), "unavailable"),
    (AttemptResult(503, 1.0), "unavailable"),
    (AttemptResult(301, 1.0), "subscriber"),
    (AttemptResult(404, 1.0), "subscriber"),
    (AttemptResult(410, 1.0), "subscriber"),
])
def test_classify_says_whose_fault(result: AttemptResult, fault: str | None) -> None:
    assert classify(result) == fault


def test_2xx_succeeds() -> None:
    d = run(3, AttemptResult(200, 5.0))
    assert (d.state, d.next_attempt_at, d.outcome, d.fault, d.counts) == ("succeeded", None, "success", None, True)


def test_a_refusal_of_ours_is_retried_soon_and_costs_no_step() -> None:
    d = run(7, AttemptResult(None, 0.0, refused=True))
    assert (d.state, d.outcome, d.fault, d.counts) == ("pending", "refused", "policy", False)
    assert d.next_attempt_at == NOW + timedelta(seconds=REFUSED_RETRY_S)


def test_410_fails_and_disables() -> None:
    d = run(1, AttemptResult(410, 1.0))
    assert (d.state, d.outcome, d.fault, d.next_attempt_at) == ("failed", "gone", "subscriber", None)
    assert d.disable_reason == "endpoint answered 410 Gone"


@pytest.mark.parametrize(("attempt", "step"), [(1, 5), (2, 300), (7, 36000)])
def test_failures_follow_the_schedule(attempt: int, step: float) -> None:
    d = run(attempt, AttemptResult(500, 1.0))
    assert (d.state, d.outcome, d.fault, d.counts) == ("pending", "retry", "unavailable", True)
    assert d.next_attempt_at == NOW + timedelta(seconds=step)


def test_jitter_spreads_a_step_both_ways() -> None:
    early, late = run(2, AttemptResult(500, 1.0), rand=0.0), run(2, AttemptResult(500, 1.0), rand=0.999999)
    assert early.next_attempt_at == NOW + timedelta(seconds=270)
    assert late.next_attempt_at is not None and late.next_attempt_at > NOW + timedelta(seconds=329)


def test_retry_after_is_a_floor() -> None:
    d = run(1, AttemptResult(503, 1.0, retry_after=120.0))
    assert d.next_attempt_at == NOW + timedelta(seconds=120)
    assert run(2, AttemptResult(503, 1.0, retry_after=1.0)).next_attempt_at == NOW + timedelta(seconds=300)


def test_the_schedule_runs_out() -> None:
    d = run(3, AttemptResult(400, 1.0), schedule=(1, 2))
    assert (d.state, d.outcome, d.fault, d.next_attempt_at) == ("failed", "failed", "subscriber", None)


def test_should_disable_after_the_whole_window_without_success() -> None:
    window = timedelta(days=5)
    assert not should_disable(None, NOW, window)
    assert not should_disable(NOW - window + timedelta(seconds=1), NOW, window)
    assert should_disable(NOW - window, NOW, window)


def test_last_send_start_keeps_one_timeout_before_the_deadline() -> None:
    deadline = NOW + timedelta(seconds=60)
    assert last_send_start(deadline, NOW, 10.0) == deadline - timedelta(seconds=10)


def test_last_send_start_uses_half_of_a_short_lease() -> None:
    deadline = NOW + timedelta(seconds=8)
    assert last_send_start(deadline, NOW, 10.0) == NOW + timedelta(seconds=4)
    assert last_send_start(NOW - timedelta(seconds=1), NOW, 10.0) == NOW - timedelta(seconds=1)
