"""Issue 9 #11: a refusal by our own policy is its own outcome, not the receiver's failure, and what
waits goes out as soon as the policy allows it (or an operator enables the subscription)."""

from __future__ import annotations

import random
from datetime import timedelta

from structlog.testing import capture_logs

from tests.stack import Stack
from worker.delivery import DeliveryPolicy, DeliveryService
from worker.store.models import Delivery, DeliveryAttempt, Subscription
from worker.webhooks.sender import WebhookSender


def delivering(stack: Stack, *, allow_http: bool) -> DeliveryService:
    """A daemon on the same database whose POLLER_WEBHOOK_ALLOW_HTTP is ``allow_http``."""
    return DeliveryService(stack.sessions, WebhookSender(timeout_s=2),
                           DeliveryPolicy(allow_http=allow_http, allow_private=True), clock=stack.clock,
                           rng=random.Random(5))


def run(service: DeliveryService) -> int:
    return service.dispatch_due(service.deliver, lease_s=60, limit=100, chunk_size=100)


def test_policy_refusal_is_its_own_outcome_and_goes_out_once_allowed(engine, sim, clock, receiver):
    """Issue 9 #11: the CLI allowed http, the daemon does not: each attempt is recorded as
    "refused" (fault "policy"), costs nothing from the retry schedule or the failure clock (no
    auto-disable after days of it), is retried every minute, and goes out on the first tick after
    the setting is fixed."""
    stack = Stack(engine, sim, clock)  # the CLI side: POLLER_WEBHOOK_ALLOW_HTTP=true
    sub, _ = stack.subs.add(receiver.url)
    stack.orders(1, stages=0)
    strict = delivering(stack, allow_http=False)
    with capture_logs() as logs:
        assert run(strict) == 1
    (attempt,) = stack.rows(DeliveryAttempt)
    assert (attempt.outcome, attempt.fault, attempt.status_code) == ("refused", "policy", None)
    assert "POLLER_WEBHOOK_ALLOW_HTTP" in attempt.error
    (delivery,) = stack.rows(Delivery)
    assert delivery.state == "pending" and delivery.attempts == 0
    assert delivery.next_attempt_at == clock() + timedelta(seconds=60)
    warning = next(e for e in logs if e["event"] == "delivery.refused")
    assert warning["log_level"] == "warning" and warning["setting"] == "POLLER_WEBHOOK_ALLOW_HTTP"
    view = stack.subs.deliveries()[0]
    assert [(a.outcome, a.fault) for a in view.attempts] == [("refused", "policy")]

    clock.advance(6 * 24 * 3600)  # longer than POLLER_WEBHOOK_DISABLE_AFTER (5 days)
    assert run(strict) == 1
    (s,) = stack.rows(Subscription)
    assert s.state == "active" and s.failing_since is None
    assert stack.rows(Delivery)[0].attempts == 0
    (again,) = stack.rows(DeliveryAttempt)  # a run of refusals is one row, kept current, not one a minute
    assert again.id == attempt.id and again.attempted_at == clock()

    clock.advance(61)  # the next tick after the daemon restarts with the setting fixed
    assert run(delivering(stack, allow_http=True)) == 1
    assert len(receiver.wait_for(1)) == 1
    (delivery,) = stack.rows(Delivery)
    assert delivery.state == "succeeded" and delivery.attempts == 1
    assert [a.outcome for a in stack.rows(DeliveryAttempt)] == ["refused", "success"]


def test_enable_makes_waiting_deliveries_due_now(engine, sim, clock, receiver):
    """Issue 9 #11: `webhooks enable` sends what waits at once, not when its retry delay ends."""
    stack = Stack(engine, sim, clock)
    sub, _ = stack.subs.add(receiver.url)
    receiver.plan(503, times=2)
    stack.orders(1, stages=0)
    assert stack.deliver() == 1
    clock.advance(6)
    assert stack.deliver() == 1  # second failure: next try in about 5 minutes
    (delivery,) = stack.rows(Delivery)
    assert delivery.next_attempt_at > clock() + timedelta(seconds=200)
    assert stack.deliver() == 0
    stack.subs.set_enabled(sub.id, True)
    assert stack.deliver() == 1
    assert [r.status for r in receiver.wait_for(3)] == [503, 503, 200]
    assert stack.rows(Delivery)[0].state == "succeeded"
