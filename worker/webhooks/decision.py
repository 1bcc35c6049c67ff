"""What an attempt's result means for the delivery and the subscription. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.backoff import schedule_delay
from worker.domain import AttemptResult, Decision

#: Svix's retry schedule, in seconds after each failure: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
SVIX_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
#: How soon a delivery our own policy refused is tried again: it goes out as soon as the policy
#: (a setting, DNS) allows, and a refusal costs nothing from the subscriber's retry schedule.
REFUSED_RETRY_S = 60.0


def classify(result: AttemptResult) -> str | None:
    """Whose fault a failure is: ``unavailable`` (timeouts, connection errors, 5xx, 429),
    ``subscriber`` (their 3xx and other 4xx) or ``policy`` (we refused to send). None for success."""
    code = result.status_code
    if result.ok:
        return None
    if result.refused:
        return "policy"
    if code is None or code == 429 or code >= 500:
        return "unavailable"
    return "subscriber"


def decide(
    attempt: int, result: AttemptResult, *, now: datetime, schedule: tuple[float, ...], jitter_ratio: float,
    rand: float,
) -> Decision:
    """Decide after attempt number ``attempt`` (1 = the first try).

    2xx succeeds. 410 fails the delivery and disables the subscription (the spec's "endpoint
    gone"). A refusal by our own policy is tried again after ``REFUSED_RETRY_S``, without using up
    the schedule. Everything else is retried on the schedule, honouring Retry-After, until it runs out.
    """
    if result.ok:
        return Decision("succeeded", None, "success", None)
    if result.refused:
        return Decision("pending", now + timedelta(seconds=REFUSED_RETRY_S), "refused", "policy", counts=False)
    fault = classify(result)
    if result.status_code == 410:
        return Decision("failed", None, "gone", "subscriber",
                        disable_reason="endpoint answered 410 Gone")
    delay = schedule_delay(attempt, schedule, jitter_ratio=jitter_ratio, rand=rand, retry_after=result.retry_after)
    if delay is None:
        return Decision("failed", None, "failed", fault)
    return Decision("pending", now + timedelta(seconds=delay), "retry", fault)


def should_disable(failing_since: datetime | None, now: datetime, disable_after: timedelta) -> bool:
    """A subscription that has failed without one success for ``disable_after`` is disabled."""
    return failing_since is not None and now - failing_since >= disable_after


def last_send_start(deadline: datetime, now: datetime, timeout_s: float) -> datetime:
    """When a batch should stop starting sends.

    A batch records its results after its last send; a send still running when the lease ends
    loses every result of the batch to the next claim, which sends the chains again. So no send
    starts within one webhook timeout of the deadline, while at least half of what is left of the
    lease is always used (a lease shorter than the timeout still sends).
    """
    left = max((deadline - now).total_seconds(), 0.0)
    return deadline - timedelta(seconds=min(timeout_s, left / 2))
