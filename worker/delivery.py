"""Delivering events: claim due deliveries, send them (webhook or SQL sink), record every attempt.

The I/O shell around worker.webhooks.decision, like service.py is around policy.py.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.clock import utcnow
from worker.documents import NotStrictJSON
from worker.domain import AttemptResult
from worker.errors import InputError, TargetRefused
from worker.fanout import fan_out
from worker.ids import event_ids
from worker.sinks.sql import SqlSink
from worker.store import deliveries, delivery_claims
from worker.store.deliveries import DeliveryWork
from worker.store.delivery_claims import DeliveryClaim
from worker.store.models import Subscription
from worker.store.repo import add_system_event
from worker.webhooks import payload
from worker.webhooks.decision import SVIX_SCHEDULE, decide, last_send_start, should_disable
from worker.webhooks.sender import WebhookSender
from worker.webhooks.urls import Resolver, check_url, resolve

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DeliveryPolicy:
    """Retry schedule, auto-disable and target rules; built from settings."""

    schedule: tuple[float, ...] = SVIX_SCHEDULE
    jitter_ratio: float = 0.1
    disable_after: timedelta = timedelta(days=5)
    allow_http: bool = False
    allow_private: bool = False
    excerpt_chars: int = 4096


@dataclass
class DeliveryReport:
    """What one batch did."""

    sent: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0
    lost_lease: int = 0
    skipped: int = 0
    disabled: list[int] = field(default_factory=list)


def redact(url: str) -> str:
    """A URL for logs and events: scheme, host and path; no query (it may carry tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def chunk_by_chain(claims: Sequence[DeliveryClaim], size: int) -> list[list[DeliveryClaim]]:
    """Split claims into chunks of about ``size`` that never split one item's chain: a head and its
    followers in two batches would go out in parallel, and the follower could arrive first."""
    chains: dict[object, list[DeliveryClaim]] = {}
    for claim in claims:
        chains.setdefault(claim.chain or ("delivery", claim.delivery_id), []).append(claim)
    chunks: list[list[DeliveryClaim]] = []
    for chain in chains.values():
        if not chunks or len(chunks[-1]) + len(chain) > size:
            chunks.append([])
        chunks[-1].extend(chain)
    return chunks


class DeliveryService:
    """Sends the outbox.

    Args:
        sessions: the poller database.
        sender: posts webhooks.
        policy: schedule and rules.
        sink: the SQL sink, when one is configured.
        clock, rng, entropy: injected time (schedules), jitter and id randomness.
        resolver: DNS, for the delivery-time target check.
        wall: the real time that stamps ``webhook-timestamp``; receivers check it against theirs.
        threads: how many chains of one batch are sent at once.
    """

    def __init__(
        self, sessions: sessionmaker[Session], sender: WebhookSender, policy: DeliveryPolicy = DeliveryPolicy(), *,
        sink: SqlSink | None = None, clock: Callable[[], datetime] = utcnow, rng: random.Random | None = None,
        entropy: Callable[[int], bytes] = os.urandom, resolver: Resolver = resolve,
        wall: Callable[[], datetime] = utcnow, threads: int = 1,
    ) -> None:
        self.sessions, self.sender, self.policy, self.sink = sessions, sender, policy, sink
        self.clock, self.rng, self.entropy, self.resolver = clock, rng or random.Random(), entropy, resolver
        self.wall, self.threads = wall, threads

    def dispatch_due(
        self, enqueue: Callable[[list[DeliveryClaim]], None], *, lease_s: float, limit: int, chunk_size: int,
    ) -> int:
        """Claim due deliveries and hand them to ``enqueue`` in chunks. Returns how many."""
        with self.sessions.begin() as session:
            claims = delivery_claims.claim_due(session, now=self.clock(), lease_s=lease_s, limit=limit)
        for chunk in chunk_by_chain(claims, chunk_size):
            enqueue(chunk)
        return len(claims)

    def deliver(self, claims: Sequence[DeliveryClaim], *, deadline: datetime | None = None) -> DeliveryReport:
        """Attempt each claimed delivery once and record the results in one transaction."""
        with self.sessions.begin() as session:
            work = deliveries.load_work(session, claims, now=self.clock())
        report = DeliveryReport()
        stop_at = None if deadline is None else last_send_start(deadline, self.clock(), self.sender.timeout_s)
        results: list[tuple[DeliveryWork, AttemptResult]] = []
        held: list[DeliveryWork] = []
        to_sink = [w for w in work if w.kind == "sql"]
        if to_sink:
            results.extend(self._to_sink(to_sink))
        # One item's events to one subscription form a chain, sent in event order (work is sorted
        # by position) and cut at the first failure. Chains are independent, so they go out on
        # threads: a batch waits for its slowest subscriber, not for the sum of them.
        chains: dict[tuple[int, int | None], list[DeliveryWork]] = {}
        for unit in (w for w in work if w.kind == "webhook"):
            key = (unit.subscription_id, unit.item_id if unit.item_id is not None else -unit.claim.delivery_id)
            chains.setdefault(key, []).append(unit)
        lock = threading.Lock()

        def run(chain: list[DeliveryWork]) -> None:
            for n, unit in enumerate(chain):
                if stop_at is not None and self.clock() >= stop_at:
                    with lock:
                        report.skipped += len(chain) - n  # our lease is over; the next claim owns them
                    return
                try:
                    result = self._send(unit)
                except NotStrictJSON as err:
                    # Never sent: a failed attempt that names the cause, not a crashed batch.
                    result = AttemptResult(None, 0.0, error=f"not sent: {err}")
                with lock:
                    results.append((unit, result))
                if not result.ok:
                    with lock:
                        held.extend(chain[n + 1:])  # an earlier event of this item failed: it goes first
                    return

        fan_out(run, list(chains.values()), threads=self.threads, name="send")
        self._record(results, report, held)
        return report

    def _send(self, unit: DeliveryWork) -> AttemptResult:
        try:
            addresses = check_url(unit.url, allow_http=self.policy.allow_http,
                                  allow_private=self.policy.allow_private, resolver=self.resolver)
        except TargetRefused as err:
            # Our policy, not the subscriber: its own outcome, off the subscriber's failure clock.
            log.warning("delivery.refused", delivery_id=unit.claim.delivery_id, subscription_id=unit.subscription_id,
                        url=redact(unit.url), reason=str(err), setting=err.setting or "none allows it")
            return AttemptResult(None, 0.0, error=f"refused: {err}", refused=True)
        except InputError as err:
            return AttemptResult(None, 0.0, error=f"not sent: {err}")  # DNS: the receiver's side, retried
        if not addresses:
            return AttemptResult(None, 0.0, error=f"not sent: webhook host of {redact(unit.url)} does not resolve")
        body = payload.body(unit.event_id, unit.event_type, unit.event_created_at, unit.event_data,
                            item_id=unit.item_id, seq=unit.seq)
        headers = payload.headers(unit.event_id, self.wall(), body, unit.secrets)
        # Connect to an address just checked, not to whatever a second DNS lookup says.
        return self.sender.post(unit.url, body, headers, addresses=addresses)

    def _to_sink(self, units: list[DeliveryWork]) -> list[tuple[DeliveryWork, AttemptResult]]:
        if self.sink is None:
            return [(u, AttemptResult(None, 0.0, error="no SQL sink configured (POLLER_SINK_DATABASE_URL)"))
                    for u in units]
        rows = [{"id": u.event_id, "type": u.event_type, "created_at": u.event_created_at, "item_id": u.item_id,
                 "seq": u.seq, "data": u.event_data} for u in units]
        started = self.clock()
        try:
            self.sink.write(rows, now=started)
        except Exception as err:  # noqa: BLE001 - a sink outage is retried like a webhook outage
            log.warning("sink.write_failed", error=f"{type(err).__name__}: {err}"[:300])
            ms = (self.clock() - started).total_seconds() * 1000
            return [(u, AttemptResult(None, ms, error=f"sink write failed: {type(err).__name__}")) for u in units]
        ms = (self.clock() - started).total_seconds() * 1000
        return [(u, AttemptResult(200, ms / len(units))) for u in units]

    def _record(self, results: list[tuple[DeliveryWork, AttemptResult]], report: DeliveryReport,
                held: list[DeliveryWork]) -> None:
        if not results and not held:
            return
        now = self.clock()
        outcome_by_sub: dict[int, bool] = {}
        gone: dict[int, str] = {}
        retry_at: dict[tuple[int, int | None], datetime | None] = {}
        decided = [(unit, result, decide(unit.attempts + 1, result, now=now, schedule=self.policy.schedule,
                                         jitter_ratio=self.policy.jitter_ratio, rand=self.rng.random()))
                   for unit, result in results]
        with self.sessions.begin() as session:
            recorded = deliveries.record_batch(session, decided, now=now, excerpt_chars=self.policy.excerpt_chars)
            report.lost_lease += len(decided) - len(recorded)
            for unit, result, decision in recorded:
                metrics.delivery(unit.kind, decision.outcome, result.latency_ms / 1000)
                report.sent += 1
                report.succeeded += decision.state == "succeeded"
                report.retrying += decision.state == "pending"
                report.failed += decision.state == "failed"
                retry_at[unit.subscription_id, unit.item_id] = decision.next_attempt_at
                if result.refused:
                    continue  # nothing was sent: the subscription's health is unchanged (logged in _send)
                outcome_by_sub[unit.subscription_id] = outcome_by_sub.get(unit.subscription_id, False) or result.ok
                if decision.disable_reason:
                    gone[unit.subscription_id] = decision.disable_reason
                if not result.ok:
                    log.info("delivery.failed", delivery_id=unit.claim.delivery_id, event_id=unit.event_id,
                             subscription_id=unit.subscription_id, status_code=result.status_code,
                             outcome=decision.outcome, error=result.error)
            for unit in held:
                due = retry_at.get((unit.subscription_id, unit.item_id)) or now
                deliveries.release(session, unit, due=due, now=now)
            for sub_id, ok in outcome_by_sub.items():
                sub = session.get(Subscription, sub_id)
                if sub is None or sub.state != "active":
                    continue
                if ok:
                    sub.failing_since, sub.last_success_at = None, now
                else:
                    sub.failing_since = sub.failing_since or now
                reason = gone.get(sub_id)
                if reason is None and should_disable(sub.failing_since, now, self.policy.disable_after):
                    reason = f"no successful delivery since {sub.failing_since.isoformat()}"  # type: ignore[union-attr]
                if reason:
                    self._disable(session, sub, reason, now)
                    report.disabled.append(sub_id)

    def _disable(self, session: Session, sub: Subscription, reason: str, now: datetime) -> None:
        """Disable a subscription and say so: an error log line and a ``subscription.disabled`` event."""
        sub.state, sub.disabled_reason, sub.updated_at = "disabled", reason, now
        data = {"subscription_id": sub.id, "kind": sub.kind, "url": redact(sub.url), "reason": reason}
        add_system_event(session, event_ids(now, self.entropy(10), 1)[0], "subscription.disabled", data, now=now)
        log.error("subscription.disabled", **data)
        metrics.subscription_disabled("gone" if "410" in reason else "failing")
        metrics.events(["subscription.disabled"])
