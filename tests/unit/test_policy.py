"""What a poll decides: events, state and next poll time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.domain import EventType, ItemRef, ItemState, PollState, StatusDocument
from worker.errors import ItemGone, ProviderResponseInvalid, ProviderUnavailable
from worker.policy import PollPolicy, after_failure, after_gone, after_success

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
ITEM = ItemRef(7, "billit", "default", "order", "1001")
POLICY = PollPolicy(backoff_base_s=10, backoff_max_s=1000, jitter_ratio=0.1, failing_after=3)
A = StatusDocument("to_send", False, {"order_status": "ToSend"})
B = StatusDocument("to_pay", False, {"order_status": "ToPay"})
DONE = StatusDocument("paid", True, {"order_status": "Paid"})


def types(outcome):
    return [e.type for e in outcome.events]


def test_first_success_is_observed_and_stored():
    """The first successful poll emits status.observed and stores the snapshot."""
    out = after_success(ITEM, PollState(60), None, A, now=NOW, policy=POLICY, rand=0.5)
    assert types(out) == [EventType.OBSERVED]
    assert out.snapshot == A and out.state == ItemState.ACTIVE
    assert out.next_poll_at == NOW + timedelta(seconds=57)  # the interval less half its 10% jitter
    data = out.events[0].data
    assert data["status"] == "to_send" and data["snapshot"] == {"order_status": "ToSend"}
    assert data["provider"] == "billit" and data["ref"] == "1001" and data["changes"] == []


def test_unchanged_poll_writes_nothing_but_the_schedule():
    """Same document: no event, no snapshot."""
    out = after_success(ITEM, PollState(60, has_snapshot=True), A, A, now=NOW, policy=POLICY, rand=0.0)
    assert out.events == [] and out.snapshot is None
    assert out.next_poll_at == NOW + timedelta(seconds=60)  # rand 0: the interval itself, never later


def test_change_lists_paths_and_previous_status():
    """status.changed carries {path, from, to}, status and previous_status."""
    out = after_success(ITEM, PollState(60, has_snapshot=True), A, B, now=NOW, policy=POLICY, rand=0.5)
    assert types(out) == [EventType.CHANGED]
    data = out.events[0].data
    assert data["changes"] == [{"path": "order_status", "from": "ToSend", "to": "ToPay"}]
    assert (data["previous_status"], data["status"]) == ("to_send", "to_pay")


def test_terminal_stops_polling():
    """A terminal document sets state terminal and no next poll."""
    out = after_success(ITEM, PollState(60, has_snapshot=True), B, DONE, now=NOW, policy=POLICY, rand=0.5)
    assert out.state == ItemState.TERMINAL and out.next_poll_at is None
    assert out.events[0].data["terminal"] is True


def test_failures_back_off_and_alert_once():
    """Retryable failures back off exponentially; poll.failing fires once at the threshold."""
    err = ProviderUnavailable("GET /v1/orders/1001 answered 500", provider="billit", status_code=500)
    state = PollState(60)
    emitted, delays = [], []
    for _ in range(5):
        out = after_failure(ITEM, state, None, err, now=NOW, policy=POLICY, rand=0.0)
        emitted += types(out)
        delays.append((out.next_poll_at - NOW).total_seconds())
        state = PollState(60, out.consecutive_failures, out.failing)
    assert emitted == [EventType.FAILING]
    assert delays == [5, 10, 20, 40, 80]
    assert state.consecutive_failures == 5 and state.failing
    assert "answered 500" in out.error


def test_failing_event_carries_error_and_count():
    """poll.failing names the error and the number of consecutive failures."""
    err = ProviderUnavailable("timed out", provider="billit")
    out = after_failure(ITEM, PollState(60, 2), A, err, now=NOW, policy=POLICY, rand=0.0)
    data = out.events[0].data
    assert data["consecutive_failures"] == 3 and "timed out" in data["error"]
    assert data["status"] == "to_send"


def test_retry_after_floor():
    """A 429's Retry-After pushes the next poll at least that far."""
    err = ProviderUnavailable("429", provider="billit", status_code=429, retry_after=300)
    out = after_failure(ITEM, PollState(60), None, err, now=NOW, policy=POLICY, rand=0.0)
    assert out.next_poll_at == NOW + timedelta(seconds=300)


def test_non_retryable_waits_the_cap():
    """Errors a quick retry cannot fix wait backoff_max, not the exponential ladder."""
    err = ProviderResponseInvalid("bad JSON", provider="billit")
    out = after_failure(ITEM, PollState(60), None, err, now=NOW, policy=POLICY, rand=0.0)
    assert out.next_poll_at == NOW + timedelta(seconds=500)


def test_recovery_after_failing():
    """The first success after poll.failing emits poll.recovered before any status event."""
    state = PollState(60, consecutive_failures=4, failing=True, has_snapshot=True)
    out = after_success(ITEM, state, A, B, now=NOW, policy=POLICY, rand=0.5)
    assert types(out) == [EventType.RECOVERED, EventType.CHANGED]
    assert out.events[0].data["consecutive_failures"] == 4
    assert out.consecutive_failures == 0 and not out.failing


def test_recovery_without_alert_is_silent():
    """Failures below the threshold recover without an event."""
    out = after_success(ITEM, PollState(60, 2, False, True), A, A, now=NOW, policy=POLICY, rand=0.5)
    assert out.events == [] and out.consecutive_failures == 0


def test_gone_stops_polling():
    """A 404 ends the item's life with item.gone."""
    out = after_gone(ITEM, A, ItemGone("404", provider="billit", status_code=404))
    assert out.state == ItemState.GONE and out.next_poll_at is None
    assert types(out) == [EventType.GONE] and out.events[0].data["status"] == "to_send"


@pytest.mark.parametrize("etype", list(EventType))
def test_every_event_type_has_the_same_keys(etype):
    """One payload shape for every event type."""
    keys = {"item_id", "provider", "account", "kind", "ref", "labels", "external_id", "status", "previous_status",
            "terminal",
            "changes", "snapshot", "error", "consecutive_failures"}
    outs = {
        EventType.OBSERVED: after_success(ITEM, PollState(1), None, A, now=NOW, policy=POLICY, rand=0),
        EventType.CHANGED: after_success(ITEM, PollState(1, has_snapshot=True), A, B, now=NOW,
                                         policy=POLICY, rand=0),
        EventType.GONE: after_gone(ITEM, None, ItemGone("x", provider="billit")),
        EventType.FAILING: after_failure(ITEM, PollState(1, 2), None, ProviderUnavailable(
            "x", provider="billit"), now=NOW, policy=POLICY, rand=0),
        EventType.RECOVERED: after_success(ITEM, PollState(1, 3, True, True), A, A, now=NOW,
                                           policy=POLICY, rand=0),
    }
    event = next(e for e in outs[etype].events if e.type == etype)
    assert set(event.data) == keys
