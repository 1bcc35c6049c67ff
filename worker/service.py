"""The only place that mixes I/O with the pure core: track, dispatch and poll."""

from __future__ import annotations

import contextvars
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.accounts import AccountEvents
from worker.catalog import check_interval
from worker.documents import NotStrictJSON, check_document
from worker.domain import ItemRef, PollOutcome, StatusDocument
from worker.errors import (
    ConfigurationError,
    InputError,
    ItemGone,
    PollNotStored,
    ProviderError,
    ProviderMisconfigured,
    ProviderResponseInvalid,
    describe_exception,
    is_credential_failure,
)
from worker.guard import Admission, RedisGuard
from worker.ids import event_ids
from worker.policy import PollPolicy, after_failure, after_gone, after_success
from worker.providers.base import Provider, utcnow
from worker.providers.registry import ProviderSet
from worker.status import record_heartbeat
from worker.store import repo
from worker.store.models import Event, Item
from worker.store.repo import Claim, PollWork

log = structlog.get_logger(__name__)


@dataclass
class PollReport:
    """Counts of what one batch of polls did (for logs and metrics)."""

    polled: int = 0
    changed: int = 0
    failed: int = 0
    gone: int = 0
    lost_lease: int = 0
    skipped: int = 0
    deferred: int = 0
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class PollerService:
    """Tracks items, claims due ones and polls them.

    Args:
        sessions: the session factory of the poller's database.
        providers: the provider adapters.
        policy: backoff and alert tunables.
        clock: wall clock (UTC); injected in tests.
        rng: random source for jitter.
        entropy: random bytes for event ids.
        guard: rate limits and circuit breakers shared by all workers (None: none).
        max_throttle_wait_s: a rate-limited poll sleeps up to this long; beyond, it is deferred.
        sleep: how to wait for a rate-limit slot.
        threads: polls of one chunk run on this many threads.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        providers: ProviderSet,
        policy: PollPolicy = PollPolicy(),
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        entropy: Callable[[int], bytes] = os.urandom,
        guard: RedisGuard | None = None,
        max_throttle_wait_s: float = 2.0,
        sleep: Callable[[float], object] = time.sleep,
        threads: int = 1,
    ) -> None:
        self.sessions = sessions
        self.providers = providers
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.entropy = entropy
        self.guard = guard
        self.max_throttle_wait_s = max_throttle_wait_s
        self.sleep = sleep
        self.threads = threads
        self.accounts = AccountEvents(sessions, clock, entropy)

    # -- tracking -------------------------------------------------------------------------

    def track(
        self, provider: str, ref: str, *, interval_s: float, kind: str | None = None,
        account: str = "default",
    ) -> Item:
        """Register an item; it is due at once.

        Raises:
            InputError: unknown provider or kind, a malformed ref or interval.
            DuplicateItemError: already tracked.
        """
        adapter = self.providers.get(provider, account)
        kind = kind or adapter.kinds[0]
        if kind not in adapter.kinds:
            raise InputError(f"{provider} has no kind {kind!r}; known: {', '.join(adapter.kinds)}")
        check_interval(interval_s, "interval")
        if not account or len(account) > 80:
            raise InputError("account must be 1 to 80 characters")
        ref = adapter.validate_ref(kind, ref)
        with self.sessions.begin() as session:
            item = repo.add_item(session, provider=provider, account=account, kind=kind, ref=ref,
                                 interval_s=interval_s, now=self.clock())
        log.info("item.tracked", item_id=item.id, provider=provider, kind=kind, ref=ref)
        return item

    # -- scheduling -----------------------------------------------------------------------

    def dispatch_due(
        self, enqueue: Callable[[list[Claim]], None], *, lease_s: float, limit: int, chunk_size: int
    ) -> int:
        """Claim the due items and hand them to ``enqueue`` in chunks. Returns how many.

        The claim commits before anything is enqueued: if enqueueing fails, the items simply
        come due again when their lease runs out.
        """
        started = time.perf_counter()
        with self.sessions.begin() as session:
            claims = repo.claim_due(session, now=self.clock(), lease_s=lease_s, limit=limit)
        for start in range(0, len(claims), chunk_size):
            enqueue(claims[start:start + chunk_size])
        elapsed = time.perf_counter() - started
        # The heartbeat `poller health` reads: beat, broker and a worker all did their part.
        with self.sessions.begin() as session:
            record_heartbeat(session, "dispatch", at=self.clock(), seconds=round(elapsed, 6), claimed=len(claims))
        return len(claims)

    # -- polling --------------------------------------------------------------------------

    def poll_claims(self, claims: Sequence[Claim], *, deadline: datetime | None = None) -> PollReport:
        """Poll each claimed item that still holds its lease, one transaction per item.

        The database is read before and written after each HTTP call, never held across it.
        Items not started by ``deadline`` (the end of their lease) are left alone: by then they
        are due again and another dispatch owns them, so polling them would poll twice.
        """
        with self.sessions.begin() as session:
            work = repo.load_work(session, claims)
        report = PollReport()

        def run(unit: PollWork) -> None:
            if deadline is not None and self.clock() >= deadline:
                with report.lock:
                    report.skipped += 1
                return
            self._poll(unit, report)

        if self.threads > 1 and len(work) > 1:
            # Polls wait on the network: a few threads turn a chunk's sum of latencies into its max,
            # which is what keeps change-to-webhook latency within a tick.
            with ThreadPoolExecutor(max_workers=min(self.threads, len(work)), thread_name_prefix="poll") as pool:
                # Each poll runs in a copy of our context, so log lines keep the task's bound fields.
                futures = [pool.submit(contextvars.copy_context().run, run, unit) for unit in work]
                for future in futures:
                    future.result()
        else:
            for unit in work:
                run(unit)
        return report

    def _poll(self, unit: PollWork, report: PollReport) -> None:
        item = unit.item
        bound = log.bind(item_id=item.id, provider=item.provider, account=item.account, ref=item.ref)
        doc: StatusDocument | None = None
        error: ProviderError | None = None
        admission = Admission(True)
        internal = False  # our own failure (a bug, a write), counted as outcome "error"
        started = time.perf_counter()
        try:
            adapter = self.providers.get(item.provider, item.account)
            if self.guard is not None:
                admission = self.guard.admit(item.provider, item.account)
                defer_to = self._defer_time(admission, adapter)
                if defer_to is not None:
                    self._defer(unit, defer_to, report, bound)
                    metrics.poll(item.provider, "deferred")
                    return
            fetched = adapter.fetch(item, unit.previous)
            if fetched.not_modified and unit.previous is not None:
                doc = unit.previous
            else:
                doc = replace(adapter.normalize(fetched.raw, item), version=fetched.version)
                check_document(doc)
        except ProviderError as err:
            error = err
        except NotStrictJSON as err:
            error = ProviderResponseInvalid(f"the normalized document cannot be stored: {err}", provider=item.provider)
        except ConfigurationError as err:
            error = ProviderMisconfigured(str(err), provider=item.provider)
        except InputError as err:
            error = ProviderResponseInvalid(str(err), provider=item.provider)
        except Exception as err:  # noqa: BLE001 - one broken adapter must not sink the batch
            bound.exception("poll.internal_error")
            internal = True
            error = ProviderResponseInvalid(f"internal error: {type(err).__name__}: {err}"[:300],
                                            provider=item.provider)
        if self.guard is not None:
            # Only the provider failing counts against it; a 404 or a bad body means it answered.
            ok = error is None or not error.retryable
            transition = self.guard.record(item.provider, item.account, ok=ok, probe=admission.probe)
            if transition is not None:
                self.accounts.breaker_event(item.provider, item.account, transition, error)
        elapsed = time.perf_counter() - started
        outcome, written, ids, not_stored = self._store(unit, doc, error, bound)
        internal = internal or not_stored
        with report.lock:
            report.polled += 1
            if written is None:
                report.lost_lease += 1
            else:
                report.events.extend(ids)
                report.gone += outcome.error is not None and outcome.state.value == "gone"
                report.failed += outcome.error is not None and outcome.state.value != "gone"
                report.changed += outcome.error is None and outcome.snapshot is not None
        metrics.poll(item.provider, _outcome_label(outcome, written is not None, internal), elapsed)
        try:
            if error is not None and is_credential_failure(error):
                self.accounts.auth_failed(item.provider, item.account, error)
            elif error is None:
                self.accounts.auth_ok(item.provider, item.account)
        except Exception:  # noqa: BLE001 - the poll itself is stored; an account alert must not fail the batch
            bound.exception("provider.account_event_failed")
        if written is None:
            bound.warning("poll.lease_lost")
            return
        metrics.events([e.type for e in written])
        if outcome.error:
            bound.warning("poll.failed", error=outcome.error, failures=outcome.consecutive_failures)
        for ev in written:
            bound.info("event.created", event_id=ev.id, type=ev.type, seq=ev.seq,
                       status=ev.data.get("status"))

    def _decide(self, unit: PollWork, doc: StatusDocument | None, error: ProviderError | None,
                now: datetime) -> PollOutcome:
        item, rand = unit.item, self.rng.random()
        if isinstance(error, ItemGone):
            return after_gone(item, unit.previous, error)
        if error is not None:
            return after_failure(item, unit.state, unit.previous, error, now=now, policy=self.policy, rand=rand)
        assert doc is not None
        return after_success(item, unit.state, unit.previous, doc, now=now, policy=self.policy, rand=rand)

    def _store(self, unit: PollWork, doc: StatusDocument | None, error: ProviderError | None,
               bound: Any) -> tuple[PollOutcome, list[Event] | None, list[str], bool]:
        """Decide and write one poll's result. A result that cannot be written (a constraint, a
        document the database refuses, a bug) is written as a failure of the item instead, so it
        backs off and alerts like any other failure rather than being re-polled every lease."""
        # One "now" for the decision and the write, so the stored schedule is exactly the decided one.
        now = self.clock()
        outcome = self._decide(unit, doc, error, now)
        ids = event_ids(now, self.entropy(10), len(outcome.events))
        try:
            with self.sessions.begin() as session:
                written = repo.apply_outcome(session, unit.claim, outcome, now=now, event_ids=ids,
                                             version=doc.version if doc is not None else None)
            return outcome, written, ids, False
        except Exception as err:  # noqa: BLE001 - whatever it was, it must land on the item
            cause = err
        bound.error("poll.store_failed", error=describe_exception(cause))
        failure = PollNotStored(f"could not store the result: {describe_exception(cause)}", provider=unit.item.provider)
        outcome = self._decide(unit, None, failure, now)
        ids = event_ids(now, self.entropy(10), len(outcome.events))
        try:
            with self.sessions.begin() as session:
                # An item whose sequence fell behind its events (an id reused before migration
                # 0005) would fail every write: resynchronized here, the next poll stores normally.
                repo.resync_event_seq(session, unit.claim.item_id)
                written = repo.apply_outcome(session, unit.claim, outcome, now=now, event_ids=ids)
            return outcome, written, ids, True
        except Exception:  # noqa: BLE001 - the failure event itself may be what cannot be stored
            pass
        outcome = replace(outcome, events=[])
        try:
            with self.sessions.begin() as session:
                written = repo.apply_outcome(session, unit.claim, outcome, now=now, event_ids=[])
        except Exception:  # noqa: BLE001 - re-raised below as the original cause
            # Not even the item can be written (the database is gone or read-only): the task fails,
            # and the lease brings the item back; health and the worker error log say why.
            raise cause from None
        return outcome, written, [], True

    def _defer_time(self, admission: Admission, adapter: Provider) -> datetime | None:
        """When a poll may not go now: the breaker's reopening time, or the next rate-limit slot."""
        assert self.guard is not None
        if not admission.go:
            assert admission.defer_until_ms is not None
            # Spread the deferred items over a second so they do not all return at once.
            return datetime.fromtimestamp(admission.defer_until_ms / 1000, UTC) + timedelta(
                seconds=self.rng.random())
        settings = adapter.settings
        if settings.rate_limit_per_second:
            wait = self.guard.throttle(adapter.name, adapter.account, rate=settings.rate_limit_per_second,
                                       burst=settings.rate_limit_burst, max_wait_s=self.max_throttle_wait_s)
            if wait > self.max_throttle_wait_s:
                return self.clock() + timedelta(seconds=wait)
            if wait > 0:
                self.sleep(wait)  # a reserved slot: waiting is cheaper than re-dispatching
        return None

    def _defer(self, unit: PollWork, until: datetime, report: PollReport, bound: Any) -> None:
        with self.sessions.begin() as session:
            repo.defer(session, unit.claim, until, now=self.clock())
        with report.lock:
            report.deferred += 1
        bound.info("poll.deferred", until=until.isoformat())

    # -- reading --------------------------------------------------------------------------

    def items(self) -> list[Item]:
        """All tracked items."""
        with self.sessions.begin() as session:
            return list(repo.list_items(session))

    def events_after(self, position: int, limit: int = 1000) -> list[Event]:
        """Events after a stream position."""
        with self.sessions.begin() as session:
            return list(repo.events_after(session, position, limit))

    def event_position(self, event_id_: str) -> int:
        """The stream position of an event id."""
        with self.sessions.begin() as session:
            return repo.event_position(session, event_id_)

    def latest_snapshot(self, item_id: int) -> StatusDocument | None:
        """The latest stored document of an item (raw included)."""
        with self.sessions.begin() as session:
            snap = repo.latest_snapshot(session, item_id)
            return StatusDocument(snap.status, snap.terminal, snap.fields, snap.raw) if snap else None


def _outcome_label(outcome: PollOutcome, written: bool, internal: bool = False) -> str:
    if not written:
        return "lost_lease"
    if internal:
        return "error"
    if outcome.error is not None:
        return "gone" if outcome.state.value == "gone" else "failed"
    return "changed" if outcome.snapshot is not None else "unchanged"


__all__ = ["PollerService", "PollReport", "ItemRef"]
