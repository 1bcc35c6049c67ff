"""Pure backoff arithmetic, shared by polling, webhook delivery and sweeps.

Randomness comes in as ``rand`` (a float in [0, 1)) and time as ``now``, so every result is
reproducible in a test.
"""

from __future__ import annotations

from datetime import datetime

from worker.dates import parse_http_date

#: Retry-After values above this are treated as this (a broken header must not park an item for years).
MAX_RETRY_AFTER_S = 24 * 3600.0


def failure_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: float,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failure.

    Capped exponential backoff with "equal jitter": the delay is drawn from the upper half of
    ``min(cap, base * 2**(attempt-1))``, so retries spread out but never collapse to zero.
    A provider's ``Retry-After`` is a floor: we never come back earlier than asked.

    Args:
        attempt: consecutive failures so far, including this one (1 for the first).
        base: the first delay, in seconds.
        cap: the largest delay our own backoff produces, in seconds.
        rand: a uniform random number in [0, 1).
        retry_after: seconds the provider asked us to wait, if it said so.

    Returns:
        The delay in seconds.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    # Exponent clamped so a long outage cannot overflow the float.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 60))
    delay = ceiling / 2 + rand * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


def success_delay(interval: float, *, jitter_ratio: float, rand: float) -> float:
    """Seconds until the next regular poll: the item's interval, less up to ``jitter_ratio`` of it.

    The jitter keeps items tracked at the same moment from staying in lock-step forever
    (changedetection.io's restart thundering herd, #3178). It only ever brings a poll forward: an
    item is then polled at least once per interval, plus at most one tick (dispatch runs per tick).
    """
    return interval * (1 - jitter_ratio * rand)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date. Returns seconds from ``now``.

    Unparseable values give ``None`` (ignored) rather than an error: the header is advice.
    A date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    # isascii(): str.isdigit() also takes "²" and "١", which float() refuses (a crashed batch).
    if value.isascii() and value.isdigit():
        return float(value)
    when = parse_http_date(value)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


def schedule_delay(
    attempt: int, schedule: tuple[float, ...], *, jitter_ratio: float, rand: float,
    retry_after: float | None = None,
) -> float | None:
    """Seconds before retry number ``attempt`` (1 = the first retry) on a fixed schedule, or None
    when the schedule is exhausted.

    The schedule is Svix's by default (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), each step
    spread by +/- ``jitter_ratio`` so a subscriber coming back is not hit by every retry at once.
    ``Retry-After`` is a floor, as for polling.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if attempt > len(schedule):
        return None
    delay = schedule[attempt - 1] * (1 - jitter_ratio + 2 * jitter_ratio * rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay
