"""Per-item delivery order under redeliver, replay and `webhooks enable` (issue 9 #8).

The promise (docs/events.md): for one item and one subscription, a later event is never sent
before an earlier one is settled (succeeded or failed for good), including while the earlier one
waits in retry backoff. Real database, a real receiver over loopback, time injected.
"""

from __future__ import annotations

from tests.receiver import Receiver
from tests.stack import Stack
from worker.store import delivery_claims
from worker.store.models import Delivery


def poll(stack: Stack) -> None:
    """One more poll of every tracked item (the simulator moved on): one more event each."""
    stack.poller.dispatch_due(stack.poller.poll_claims, lease_s=30, limit=100, chunk_size=100)
    stack.sim.clock.advance(10)


def assert_in_order(stack: Stack, receiver: Receiver) -> None:
    """Every request for an item's event came after a 2xx for each earlier event of that item."""
    seq_of = {e.id: (e.item_id, e.seq) for e in stack.poller.events_after(0)}
    done: dict[int, set[int]] = {}
    for r in receiver.received:
        item, seq = seq_of[r.webhook_id]
        earlier = {s for i, s in seq_of.values() if i == item and s < seq}
        assert earlier <= done.get(item, set()), (
            f"event seq {seq} of item {item} sent before {sorted(earlier - done.get(item, set()))} settled: "
            f"{[seq_of[x.webhook_id] for x in receiver.received]}")
        if r.status < 300:
            done.setdefault(item, set()).add(seq)


def statuses(receiver: Receiver) -> list[str]:
    return [r.json["data"]["status"] for r in receiver.ok()]


def test_redeliver_of_an_event_in_backoff_keeps_the_item_in_order(stack, receiver):
    """Issue 9 #8: #1 in retry backoff and #2 held behind it; after `redeliver #1` and a new event
    #3, the receiver got #1 then #3 while #2 was still pending. Now #1, #2, #3 go in order, at once."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    (item,) = stack.orders(1, stages=1)  # events #1 (to_send) and #2 (pending_delivery)
    first = stack.poller.events_after(0)[0]
    receiver.plan(500, times=2, match=first.id)
    stack.deliver()  # #1 fails; #2 is held until #1's retry
    stack.clock.advance(6)
    stack.deliver()  # #1 fails again (next try in ~5 min); #2 held again
    assert statuses(receiver) == []
    poll(stack)  # event #3 (delivered), due now
    assert stack.subs.redeliver(first.id) == 1
    stack.deliver()
    assert_in_order(stack, receiver)
    assert statuses(receiver) == ["to_send", "pending_delivery", "delivered"]
    assert {d.state for d in stack.rows(Delivery)} == {"succeeded"}


def test_redeliver_of_a_sent_event_waits_for_a_later_one_in_backoff(stack, receiver):
    """Issue 9 #8: #1 was delivered, #2 fails and waits in backoff; `redeliver #1` and a new event
    #3 must not let #3 overtake #2."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    stack.orders(1, stages=1)
    first, second = stack.poller.events_after(0)
    receiver.plan(500, times=2, match=second.id)
    stack.deliver()  # #1 ok, #2 fails
    stack.clock.advance(6)
    stack.deliver()  # #2 fails again: next try in ~5 min
    poll(stack)  # event #3
    stack.subs.redeliver(first.id)
    stack.deliver()
    assert_in_order(stack, receiver)
    while stack.next_due():
        stack.deliver()
    assert_in_order(stack, receiver)
    assert [s for s in statuses(receiver)] == ["to_send", "to_send", "pending_delivery", "delivered"]


def test_replay_while_events_wait_keeps_order_and_sends_each_once(stack, receiver):
    """Issue 9 #8: a replay over an item whose events wait in backoff re-adds them in order; an
    event already waiting is moved up, not queued a second time."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    start = stack.clock()
    stack.orders(2, stages=1)
    events = stack.poller.events_after(0)
    receiver.plan(500, times=2, match=events[0].id)
    stack.deliver()
    stack.clock.advance(6)
    stack.deliver()
    poll(stack)
    stack.subs.replay(start)
    while stack.next_due():
        stack.deliver()
    assert_in_order(stack, receiver)
    per_event: dict[str, int] = {}
    for r in receiver.ok():
        per_event[r.webhook_id] = per_event.get(r.webhook_id, 0) + 1
    assert set(per_event) == {e.id for e in stack.poller.events_after(0)}
    assert max(per_event.values()) <= 2  # the replayed copy at most, never a third


def test_enable_after_disable_keeps_order(stack, receiver):
    """Issue 9 #8: what waited while a subscription was disabled goes out in order on enable."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    stack.orders(1, stages=1)
    first = stack.poller.events_after(0)[0]
    receiver.plan(500, times=2, match=first.id)
    stack.deliver()
    stack.clock.advance(6)
    stack.deliver()
    stack.subs.set_enabled(sub.id, False)
    stack.clock.advance(3600)
    assert stack.deliver() == 0
    stack.subs.set_enabled(sub.id, True)
    stack.subs.redeliver(first.id)
    poll(stack)
    while stack.next_due():
        stack.deliver()
    assert_in_order(stack, receiver)
    assert statuses(receiver) == ["to_send", "pending_delivery", "delivered"]


def test_a_late_batch_does_not_send_past_an_event_another_worker_took(stack, receiver):
    """Issue 9 #8: a batch picked up after its lease ran out lost #1 to a newer claim but still held
    #2, and sent #2 while #1 was with the other worker. The rest of that item's chain is left
    for the next claim."""
    sub, secret = stack.subs.add(receiver.url)
    receiver.secrets = [secret]
    stack.orders(1, stages=1)
    with stack.sessions.begin() as s:
        late = delivery_claims.claim_due(s, now=stack.clock(), lease_s=60, limit=10)
    assert len(late) == 2
    stack.clock.advance(61)
    with stack.sessions.begin() as s:
        newer = delivery_claims.claim_due(s, now=stack.clock(), lease_s=60, limit=1)  # #1 only
    stack.delivery.deliver(late)
    assert receiver.received == []
    stack.delivery.deliver(newer)
    while stack.next_due():
        stack.deliver()
    assert_in_order(stack, receiver)
    assert statuses(receiver) == ["to_send", "pending_delivery"]


def test_a_claim_of_twenty_thousand_due_chains_stays_within_the_drivers_parameter_limits(engine, clock):
    """A subscriber back after an outage: 17,000 items with two due deliveries each. One claim
    takes 17,000 heads and 3,000 followers (PostgreSQL refused the follower query's 65,536+ bound
    values before; a stock SQLite allows 32,766)."""
    from sqlalchemy import insert

    from worker.store.db import make_sessionmaker
    from worker.store.models import Event, Subscription

    sessions = make_sessionmaker(engine)
    items = 17_000
    with sessions.begin() as s:
        sub = Subscription(kind="webhook", url="https://example.com/hook", state="active", created_at=clock(),
                           updated_at=clock())
        s.add(sub)
        s.flush()
        s.execute(insert(Event), [{"position": n + 1, "id": f"evt_{n:026d}", "item_id": n // 2 + 1, "seq": n % 2 + 1,
                                   "type": "status.changed", "data": {}, "created_at": clock()}
                                  for n in range(2 * items)])
        s.execute(insert(Delivery), [{"subscription_id": sub.id, "event_position": n + 1, "item_id": n // 2 + 1,
                                      "state": "pending", "attempts": 0, "next_attempt_at": clock(), "lease_id": 0,
                                      "created_at": clock(), "updated_at": clock()} for n in range(2 * items)])
    with sessions.begin() as s:
        claims = delivery_claims.claim_due(s, now=clock(), lease_s=60, limit=20_000)
    assert len(claims) == 20_000
    by_chain: dict[tuple[int, int] | None, int] = {}
    for c in claims:
        by_chain[c.chain] = by_chain.get(c.chain, 0) + 1
    assert len(by_chain) == items and sorted(by_chain.values()).count(2) == 3_000
