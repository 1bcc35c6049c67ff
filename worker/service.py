"""The polling service: track items, claim the due ones and poll them (worker.polling), the I/O
shell around the pure decisions of worker.policy. Celery tasks and the HTTP API both call it."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker.accounts import AccountEvents
from worker.capacity import CapacityWatch, limits_of
from worker.catalog import check_interval
from worker.clock import utcnow
from worker.domain import ItemRef, PollOutcome, StatusDocument
from worker.errors import (
    InputError,
    ItemGone,
    PollNotStored,
    ProviderError,
    describe_exception,
)
from worker.guard import RedisGuard
from worker.ids import event_ids
from worker.listed import Listed, ListedReport
from worker.listed_store import store_listed
from worker.policy import PollPolicy, after_failure, after_gone, after_success
from worker.polling import ChunkPoller
from worker.polls import PollReport
from worker.providers.registry import ProviderSet
from worker.reconcile import Reconciler
from worker.status import record_heartbeat
from worker.store import repo, stream, tallies
from worker.store.db import checkpoint
from worker.store.models import Event, Item
from worker.store.repo import Claim, PollWork

log = structlog.get_logger(__name__)


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
        threads: polls run on this many threads per process (they wait on the network).
        reads: a read-only session factory for what only reads (the sessions by default).
        reconciler: the longer intervals of accounts whose sweeps are healthy (None: none).
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
        reads: sessionmaker[Session] | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.sessions = sessions
        self.reads = reads or sessions
        self.providers = providers
        self.policy = policy
        self.clock = clock
        self.rng = rng or random.Random()
        self.entropy = entropy
        self.guard = guard
        self.max_throttle_wait_s = max_throttle_wait_s
        self.sleep = sleep
        self.threads = threads
        self.reconciler = reconciler
        self.accounts = AccountEvents(sessions, clock, entropy)
        self.chunks = ChunkPoller(self)
        self.capacity = CapacityWatch(self.reads, limits_of(providers))

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
        self, enqueue: Callable[[list[Claim]], None], *, lease_s: float, limit: int, chunk_size: int,
        lookahead_s: float = 0.0,
    ) -> int:
        """Claim the due items and hand them to ``enqueue`` in chunks. Returns how many.

        The claim commits before anything is enqueued: if enqueueing fails, the items simply
        come due again when their lease runs out. ``lookahead_s`` claims items due that much
        later too: with half a tick, an item is polled within half a tick of its due time on
        either side, instead of up to a whole tick late.
        """
        started = time.perf_counter()
        with self.sessions.begin() as session:
            claims = repo.claim_due(session, now=self.clock(), lease_s=lease_s, limit=limit, lookahead_s=lookahead_s)
        for start in range(0, len(claims), chunk_size):
            enqueue(claims[start:start + chunk_size])
        elapsed = time.perf_counter() - started
        try:
            self.capacity.check()  # at most once a minute: a warning when an account needs more than its limit
        except Exception:  # noqa: BLE001 - the tick's own work is done; this is advice
            log.exception("capacity.check_failed")
        # The heartbeat `poller health` reads: beat, broker and a worker all did their part.
        # SQLite: the tick copies the log into the database file, so no poll's or delivery's
        # commit does (see worker.store.db.AUTOCHECKPOINT_PAGES); the heartbeat's small write
        # then starts the log afresh.
        checkpoint(self.sessions.kw["bind"])
        with self.sessions.begin() as session:
            record_heartbeat(session, "dispatch", at=self.clock(), seconds=round(elapsed, 6), claimed=len(claims))
            tallies.fold(session)  # the running counts' deltas since the last tick, one row per key again
        return len(claims)

    # -- polling --------------------------------------------------------------------------

    def poll_claims(self, claims: Sequence[Claim], *, deadline: datetime | None = None) -> PollReport:
        """Poll each claimed item that still holds its lease (see worker.polling).

        The database is read before and written after the HTTP calls, never held across them.
        ``deadline`` is when the items may be claimed again (their lease less the dispatch's
        lookahead). No poll starts within one call's timeout of it (half the time left at most):
        one still running then would run beside the next claim's poll of the same item. The
        items not started are made due again at once.
        """
        return self.chunks.run(claims, deadline)

    def store_listed(self, provider: str, account: str, listed: Mapping[tuple[str, str], Listed], *,
                     lease_s: float = 30.0) -> ListedReport:
        """Store what a sweep read from a provider's list, by ``(kind, ref)``, as polls of those
        items would: same lease rules, snapshots and events (see worker.listed for when a list is
        believed; the items it is not are made due, those listed at a version already read are
        left alone). Untracked or finished items are left."""
        return store_listed(self.chunks, provider, account, listed, lease_s)

    def _decide(self, unit: PollWork, doc: StatusDocument | None, error: ProviderError | None,
                now: datetime) -> PollOutcome:
        item, rand = unit.item, self.rng.random()
        if isinstance(error, ItemGone):
            return after_gone(item, unit.previous, error)
        if error is not None:
            return after_failure(item, unit.state, unit.previous, error, now=now, policy=self.policy, rand=rand)
        assert doc is not None
        state = unit.state
        if self.reconciler is not None:
            state = replace(state, interval_s=self.reconciler.interval(item.provider, item.account, item.kind,
                                                                       state.interval_s))
        return after_success(item, state, unit.previous, doc, now=now, policy=self.policy, rand=rand)

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

    # -- reading --------------------------------------------------------------------------

    def items(self) -> list[Item]:
        """All tracked items."""
        with self.sessions.begin() as session:
            return list(repo.list_items(session))

    def events_after(self, position: int, limit: int = 1000) -> list[Event]:
        """Events after a stream position."""
        with self.sessions.begin() as session:
            return list(stream.events_after(session, position, limit))

    def event_position(self, event_id_: str) -> int:
        """The stream position of an event id."""
        with self.sessions.begin() as session:
            return stream.event_position(session, event_id_)

    def cursor_position(self, after: str | None) -> int:
        """The position an events cursor reads after (CursorExpired when it is from before what
        retention removed)."""
        with self.sessions.begin() as session:
            return stream.cursor_position(session, after)

    def latest_snapshot(self, item_id: int) -> StatusDocument | None:
        """The latest stored document of an item (raw included)."""
        with self.sessions.begin() as session:
            snap = repo.latest_snapshot(session, item_id)
            return StatusDocument(snap.status, snap.terminal, snap.fields, snap.raw) if snap else None


__all__ = ["PollerService", "PollReport", "ItemRef"]
