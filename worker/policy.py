"""Pure decisions after a poll: which events to emit, the item's new state and next poll time.

The I/O shell (service.py) fetches and stores; everything it must decide is decided here,
from arguments only, so the rules are table-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from worker.backoff import failure_delay, success_delay
from worker.diff import diff_fields
from worker.domain import (
    Change,
    EventType,
    ItemRef,
    ItemState,
    NewEvent,
    PollOutcome,
    PollState,
    StatusDocument,
)
from worker.errors import ProviderError


@dataclass(frozen=True)
class PollPolicy:
    """Tunables for scheduling and alerting; built from settings."""

    backoff_base_s: float = 10.0
    backoff_max_s: float = 3600.0
    jitter_ratio: float = 0.1
    failing_after: int = 5


def event_data(
    item: ItemRef,
    *,
    status: str | None,
    previous_status: str | None = None,
    terminal: bool = False,
    changes: list[Change] | None = None,
    snapshot: dict[str, Any] | None = None,
    error: str | None = None,
    consecutive_failures: int = 0,
) -> dict[str, Any]:
    """The ``data`` object of an event. Every type carries the same keys, so one schema fits all."""
    return {
        "item_id": item.id,
        "provider": item.provider,
        "account": item.account,
        "kind": item.kind,
        "ref": item.ref,
        "labels": dict(item.labels),
        "external_id": item.external_id,
        "status": status,
        "previous_status": previous_status,
        "terminal": terminal,
        "changes": [c.to_dict() for c in changes or []],
        "snapshot": snapshot,
        "error": error,
        "consecutive_failures": consecutive_failures,
    }


def after_success(
    item: ItemRef,
    state: PollState,
    previous: StatusDocument | None,
    doc: StatusDocument,
    *,
    now: datetime,
    policy: PollPolicy,
    rand: float,
) -> PollOutcome:
    """Decide what a successful poll means.

    Args:
        item: the polled item.
        state: its bookkeeping before this poll.
        previous: the latest stored snapshot, or None before the first success.
        doc: the freshly normalized document.
        now: the time of the poll.
        policy: scheduling tunables.
        rand: a uniform random number in [0, 1) for jitter.

    Returns:
        The outcome; ``snapshot`` is set only when the document differs from ``previous``.
    """
    events: list[NewEvent] = []
    if state.failing:
        events.append(NewEvent(EventType.RECOVERED, event_data(
            item, status=doc.status, terminal=doc.terminal, snapshot=doc.fields,
            consecutive_failures=state.consecutive_failures,
        )))
    snapshot: StatusDocument | None = None
    if previous is None:
        snapshot = doc
        events.append(NewEvent(EventType.OBSERVED, event_data(
            item, status=doc.status, terminal=doc.terminal, snapshot=doc.fields,
        )))
    else:
        changes = diff_fields(previous.fields, doc.fields)
        if changes or previous.status != doc.status or previous.terminal != doc.terminal:
            snapshot = doc
            events.append(NewEvent(EventType.CHANGED, event_data(
                item, status=doc.status, previous_status=previous.status, terminal=doc.terminal,
                changes=changes, snapshot=doc.fields,
            )))
    if doc.terminal:
        return PollOutcome(ItemState.TERMINAL, None, 0, False, events, snapshot)
    delay = success_delay(state.interval_s, jitter_ratio=policy.jitter_ratio, rand=rand)
    return PollOutcome(ItemState.ACTIVE, now + timedelta(seconds=delay), 0, False, events, snapshot)


def after_failure(
    item: ItemRef,
    state: PollState,
    previous: StatusDocument | None,
    error: ProviderError,
    *,
    now: datetime,
    policy: PollPolicy,
    rand: float,
) -> PollOutcome:
    """Decide what a failed poll means: backoff, and ``poll.failing`` once past the threshold.

    Retryable errors back off exponentially from ``backoff_base_s`` and raise ``poll.failing``
    after ``failing_after`` tries. Errors a quick retry cannot fix (bad credentials, schema drift)
    raise it at once and wait the full ``backoff_max_s``: they need a person or a provider fix, and
    hammering the provider meanwhile helps nobody.
    """
    failures = state.consecutive_failures + 1
    if error.retryable:
        delay = failure_delay(failures, base=policy.backoff_base_s, cap=policy.backoff_max_s,
                              rand=rand, retry_after=error.retry_after)
    else:
        delay = failure_delay(failures, base=policy.backoff_max_s, cap=policy.backoff_max_s,
                              rand=rand, retry_after=error.retry_after)
    events: list[NewEvent] = []
    failing = state.failing
    # A failure no retry can fix (credentials, settings, a 4xx) is worth an alert at once: waiting
    # for `failing_after` tries at the slow pace would report it hours late.
    if not failing and (failures >= policy.failing_after or not error.retryable):
        failing = True
        events.append(NewEvent(EventType.FAILING, event_data(
            item, status=previous.status if previous else None,
            terminal=False, snapshot=previous.fields if previous else None,
            error=str(error), consecutive_failures=failures,
        )))
    return PollOutcome(ItemState.ACTIVE, now + timedelta(seconds=delay), failures, failing, events,
                       error=str(error))


def after_gone(
    item: ItemRef, previous: StatusDocument | None, error: ProviderError
) -> PollOutcome:
    """The provider says the item no longer exists: emit ``item.gone`` and stop polling."""
    event = NewEvent(EventType.GONE, event_data(
        item, status=previous.status if previous else None, terminal=True,
        snapshot=previous.fields if previous else None, error=str(error),
    ))
    return PollOutcome(ItemState.GONE, None, 0, False, [event], error=str(error))
