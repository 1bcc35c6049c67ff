"""One chunk of polls: admit, fetch, decide, store, with the costs paid per chunk, not per poll.

A chunk reads its items in one read-only transaction, asks the guard once per provider account
(breaker and rate limit in one round trip), fetches on a thread pool shared by the process,
records the outcomes with the guard once per account again, and writes every result in one
transaction: unchanged polls as one batched schedule update, changed ones with their snapshot and
events. If that transaction fails, each result is written alone, so one bad write lands on its
own item only (see PollerService._store).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.accounts import AccountEvents
from worker.documents import NotStrictJSON, check_document
from worker.domain import ItemRef, PollOutcome, StatusDocument
from worker.errors import (
    ConfigurationError,
    InputError,
    ProviderError,
    ProviderMisconfigured,
    ProviderResponseInvalid,
    describe_exception,
    is_credential_failure,
)
from worker.fanout import fan_out
from worker.guard import RedisGuard
from worker.ids import event_ids
from worker.polls import Poll, PollReport
from worker.providers.registry import ProviderSet
from worker.store import repo
from worker.store.models import Event
from worker.store.repo import Claim, PollWork
from worker.webhooks.decision import last_send_start

log = structlog.get_logger(__name__)


class PollHost(Protocol):
    """What a ChunkPoller uses of the service it polls for (worker.service.PollerService): its
    clients and settings, and its one-poll decision and write. A protocol, so this module does not
    import the service that imports it."""

    sessions: sessionmaker[Session]
    reads: sessionmaker[Session]
    providers: ProviderSet
    guard: RedisGuard | None
    accounts: AccountEvents
    clock: Callable[[], datetime]
    rng: random.Random
    entropy: Callable[[int], bytes]
    sleep: Callable[[float], object]
    threads: int
    max_throttle_wait_s: float

    def _decide(self, unit: PollWork, doc: StatusDocument | None, error: ProviderError | None,
                now: datetime) -> PollOutcome: ...

    def _store(self, unit: PollWork, doc: StatusDocument | None, error: ProviderError | None,
               bound: Any) -> tuple[PollOutcome, list[Event] | None, list[str], bool]: ...


class ChunkPoller:
    """Polls chunks of claimed items for a service (its settings and clients: :class:`PollHost`)."""

    def __init__(self, service: PollHost) -> None:
        self.svc = service
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        # One pool per process (a forked child starts its own), shared by every chunk running in it.
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(max_workers=self.svc.threads, thread_name_prefix="poll")
                self._pool_pid = os.getpid()
            return self._pool

    def run(self, claims: Sequence[Claim], deadline: datetime | None) -> PollReport:
        """Poll the claimed items that still hold their lease; see PollerService.poll_claims."""
        with self.svc.reads.begin() as session:
            work = repo.load_work(session, claims, documents=False)
        report = PollReport()
        polls, deferred = self._admit(work)
        done, held = self._fetch_all(polls, deadline, report)
        self._record(done)
        self._read_previous(done)
        self.write(done, deferred + held, report)
        self._report(done, report)
        return report

    # -- admission ------------------------------------------------------------------------

    def _admit(self, work: list[PollWork]) -> tuple[list[Poll], list[tuple[PollWork, datetime]]]:
        """Ask the guard once per provider account which polls may go now, and when the rest may."""
        svc, guard = self.svc, self.svc.guard
        if guard is None:
            return [Poll(u) for u in work], []
        groups: dict[tuple[str, str], list[PollWork]] = defaultdict(list)
        for unit in work:
            groups[(unit.item.provider, unit.item.account)].append(unit)
        polls: list[Poll] = []
        deferred: list[tuple[PollWork, datetime]] = []
        for (provider, account), units in groups.items():
            try:
                limits = svc.providers.get(provider, account).settings
                rate = limits.rate_limit_per_second
            except Exception:  # noqa: BLE001 - an unknown or broken provider fails in its fetch, where it lands
                polls += [Poll(u) for u in units]
                continue
            try:
                got = guard.admit_many(provider, account, len(units), rate=rate, burst=limits.rate_limit_burst,
                                       max_wait_s=svc.max_throttle_wait_s)
            except Exception as err:  # noqa: BLE001 - fail open, loudly: see below
                # The guard's store (the broker's Redis) failing is our fault, not the items': they
                # are polled unguarded (the chunk's own tally still bounds a storm) rather than
                # marked failed and backed off for hours. Without the broker no chunk arrives, so
                # this is a blip or a misconfigured Redis, and it is logged as an error each chunk.
                log.error("poll.guard_unavailable", provider=provider, account=account, polls=len(units),
                          error=describe_exception(err))
                polls += [Poll(u) for u in units]
                continue
            polls += [Poll(u, wait_s=w, probe=got.probe, counted=True) for u, w in zip(units, got.waits, strict=False)]
            for n, unit in enumerate(units[len(got.waits):]):
                if got.breaker or not rate:
                    # An open breaker: spread the deferred polls over a second so they do not all return at once.
                    until = datetime.fromtimestamp(got.defer_until_ms / 1000, UTC) + timedelta(
                        seconds=svc.rng.random())
                else:
                    # The rate limit's next slots, one per 1/rate seconds: the deferred polls come back in turn.
                    until = svc.clock() + timedelta(seconds=(got.defer_until_ms - got.now_ms) / 1000 + n / rate)
                deferred.append((unit, until))
        return polls, deferred

    # -- fetching -------------------------------------------------------------------------

    def _fetch_all(self, polls: list[Poll], deadline: datetime | None,
                   report: PollReport) -> tuple[list[Poll], list[tuple[PollWork, datetime]]]:
        """Fetch on the pool; returns the polls that ran, and those held back (deferred like the
        rest): because their provider account failed enough in this chunk to open its breaker, or
        because they could not start in time (see below)."""
        svc = self.svc
        tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        lock = threading.Lock()
        policy = svc.guard.policy if svc.guard is not None else None
        # After its deadline an item may be claimed again, and the chunk's results are written
        # after its last call: a poll that could still be running then would run beside the next
        # claim's poll of the same item. So, as a delivery batch does, no poll starts within one
        # call's timeout of the deadline (at least half the time left is used: a short lease still polls).
        now = svc.clock()
        stops = {} if deadline is None else {
            key: last_send_start(deadline, now, svc.providers.timeout_of(*key))
            for key in {(p.unit.item.provider, p.unit.item.account) for p in polls}}

        def run(poll: Poll) -> str:
            key = (poll.unit.item.provider, poll.unit.item.account)
            # A reserved rate-limit slot is waited for first, so the wait counts against the lease.
            if key in stops and svc.clock() + timedelta(seconds=poll.wait_s) >= stops[key]:
                return "skipped"
            if policy is not None:
                with lock:
                    oks, fails = tally[key]
                    # The breaker counts a chunk's outcomes after it: without this, a storm would
                    # cost a whole chunk of failing calls instead of the breaker's minimum.
                    if fails >= policy.min_calls and fails >= policy.failure_ratio * (oks + fails):
                        return "held"
            if poll.wait_s > 0:
                svc.sleep(poll.wait_s)  # a reserved slot: waiting is cheaper than re-dispatching
            if poll.error is None:
                self._fetch(poll)
            with lock:
                tally[key][poll.error is not None and poll.error.retryable] += 1
            return "done"

        ran = fan_out(run, polls, threads=svc.threads, pool=self._executor)
        report.skipped += ran.count("skipped")
        cooldown = policy.cooldown_s if policy is not None else 0.0
        after = svc.clock()
        held = [(p.unit, after + timedelta(seconds=cooldown + svc.rng.random()))
                for p, r in zip(polls, ran, strict=True) if r == "held"]
        # A skipped poll is due again at once (at its rate-limit slot), not when its lease runs out;
        # an item claimed again meanwhile has a new lease, which the deferral leaves alone.
        held += [(p.unit, after + timedelta(seconds=p.wait_s)) for p, r in zip(polls, ran, strict=True)
                 if r == "skipped"]
        return [p for p, r in zip(polls, ran, strict=True) if r == "done"], held

    def _fetch(self, poll: Poll) -> None:
        unit = poll.unit
        item, previous = unit.item, unit.previous
        poll.started_at = self.svc.clock()
        started = time.perf_counter()
        try:
            adapter = self.svc.providers.get(item.provider, item.account)
            fetched = adapter.fetch(item, unit.version if unit.state.has_snapshot else None)
            if fetched.not_modified and previous is not None:
                poll.doc = previous
            elif fetched.not_modified and unit.unread:
                poll.not_modified = True  # the document is the latest snapshot: read after the calls
            else:
                poll.doc = replace(adapter.normalize(fetched.raw, item), version=fetched.version)
                check_document(poll.doc)
        except ProviderError as err:
            poll.error = err
        except NotStrictJSON as err:
            poll.error = ProviderResponseInvalid(f"the normalized document cannot be stored: {err}",
                                                 provider=item.provider)
        except ConfigurationError as err:  # our own settings: not the provider's fault
            poll.internal = True
            poll.error = ProviderMisconfigured(str(err), provider=item.provider)
        except InputError as err:
            poll.error = ProviderResponseInvalid(str(err), provider=item.provider)
        except Exception as err:  # noqa: BLE001 - one broken adapter must not sink the batch
            log.exception("poll.internal_error", item_id=item.id, provider=item.provider)
            poll.internal = True
            poll.error = ProviderResponseInvalid(f"internal error: {type(err).__name__}: {err}"[:300],
                                                 provider=item.provider)
        if poll.error is not None:
            poll.doc = None
        poll.seconds = time.perf_counter() - started

    def _record(self, done: list[Poll]) -> None:
        """Count the outcomes with the breaker, once per provider account."""
        guard = self.svc.guard
        if guard is None:
            return
        groups: dict[tuple[str, str], list[Poll]] = defaultdict(list)
        for poll in done:
            if poll.counted:
                groups[(poll.unit.item.provider, poll.unit.item.account)].append(poll)
        for (provider, account), polls in groups.items():
            # Only the provider failing counts against it; a 404 or a bad body means it answered.
            failed = [p for p in polls if p.error is not None and p.error.retryable]
            try:
                transition = guard.record_many(provider, account, oks=len(polls) - len(failed), fails=len(failed),
                                               probe=any(p.probe for p in polls))
                if transition is not None:
                    self.svc.accounts.breaker_event(provider, account, transition,
                                                    failed[-1].error if failed else None)
            except Exception as err:  # noqa: BLE001 - the polls themselves must still be stored
                log.error("poll.guard_record_failed", provider=provider, account=account, error=type(err).__name__)

    # -- storing --------------------------------------------------------------------------

    def _read_previous(self, done: list[Poll]) -> None:
        """Give the polls whose latest snapshot was not read (``PollWork.unread``) what their
        decision needs: a document with the stored digest stands for the snapshot it equals; the
        others (a change, a failure, a 304) get the snapshot, read for all of them at once."""
        need: list[Poll] = []
        for poll in done:
            unit = poll.unit
            if not unit.unread:
                continue
            if poll.doc is not None and poll.doc_digest() == unit.digest:
                poll.unit = replace(unit, previous=poll.doc)
            else:
                need.append(poll)
        if not need:
            return
        with self.svc.reads.begin() as session:
            docs = repo.latest_documents(session, [p.unit.item.id for p in need])
        for poll in need:
            found = docs.get(poll.unit.item.id)
            previous = replace(found, version=poll.unit.version) if found is not None else None
            poll.unit = replace(poll.unit, previous=previous)
            if poll.not_modified:
                poll.doc = previous
                if previous is None:
                    poll.error = ProviderResponseInvalid("the provider answered 304 Not Modified, and no "
                                                         "earlier document of the item is stored",
                                                         provider=poll.unit.item.provider)

    def write(self, done: list[Poll], deferred: list[tuple[PollWork, datetime]], report: PollReport) -> None:
        """Decide and write the polls that ran, in one transaction (one by one if that fails), and
        move the deferred ones to their new times."""
        svc = self.svc
        now = svc.clock()
        batch = []
        for poll in done:
            # From when the call went out, not from when the chunk is written: a poll that waited
            # for the rest of its chunk must not push its item's next poll later by that wait.
            at = poll.started_at or now
            poll.outcome = svc._decide(poll.unit, poll.doc, poll.error, at)
            events = len(poll.outcome.events)
            batch.append((poll.unit.claim, poll.outcome, event_ids(now, svc.entropy(10), events) if events else [],
                          poll.doc.version if poll.doc is not None else None, at))
        # The digests a poll found that its item does not have yet (a new snapshot records its own).
        digests = {p.unit.item.id: d for p in done if (d := p.doc_digest()) is not None and d != p.unit.digest}
        try:
            with svc.sessions.begin() as session:
                written = repo.apply_outcomes(session, batch, now=now, digests=digests,
                                              lock_also=[u.claim.item_id for u, _ in deferred])
                moved = repo.defer_many(session, [(u.claim, until) for u, until in deferred], now=now)
            for poll, w in zip(done, written, strict=True):
                poll.written = w
        except Exception as err:  # noqa: BLE001 - written again one by one, where each failure lands on its item
            log.warning("poll.batch_store_failed", polls=len(done), error=describe_exception(err))
            for poll in done:
                bound = log.bind(item_id=poll.unit.item.id, provider=poll.unit.item.provider)
                poll.outcome, poll.written, _, not_stored = svc._store(poll.unit, poll.doc, poll.error, bound)
                poll.internal = poll.internal or not_stored
            moved = 0
            for unit, until in deferred:
                with svc.sessions.begin() as session:
                    moved += repo.defer(session, unit.claim, until, now=now)
        report.deferred += moved
        if deferred:
            metrics.polls(Counter({(u.item.provider, "deferred"): 1 for u, _ in deferred}))
            log.info("poll.deferred", polls=len(deferred), until=min(t for _, t in deferred).isoformat())

    def _report(self, done: list[Poll], report: PollReport) -> None:
        """Counts, metrics, account alerts and log lines, after the write."""
        outcomes: Counter[tuple[str, str]] = Counter()
        refused: dict[tuple[str, str], ProviderError] = {}
        answered: set[tuple[str, str]] = set()
        for poll in done:
            item, outcome, written = poll.unit.item, poll.outcome, poll.written
            assert outcome is not None
            report.polled += 1
            if written is None:
                report.lost_lease += 1
                log.warning("poll.lease_lost", item_id=item.id, provider=item.provider, ref=item.ref)
            else:
                report.events.extend(e.id for e in written)
                gone = outcome.error is not None and outcome.state.value == "gone"
                report.gone += gone
                report.failed += outcome.error is not None and not gone
                report.changed += outcome.error is None and outcome.snapshot is not None
            outcomes[(item.provider, _outcome_label(outcome, written is not None, poll.internal))] += 1
            metrics.poll_seconds(item.provider, poll.seconds)
            if poll.error is not None and is_credential_failure(poll.error):
                refused[(item.provider, item.account)] = poll.error
            elif poll.error is None:
                answered.add((item.provider, item.account))
            if written is None:
                continue
            if outcome.error:
                log.warning("poll.failed", item_id=item.id, provider=item.provider, account=item.account,
                            ref=item.ref, error=outcome.error, failures=outcome.consecutive_failures)
            announce(item, written)
        metrics.polls(outcomes)
        for provider, account in refused.keys() | answered:
            try:
                if (provider, account) in refused:
                    self.svc.accounts.auth_failed(provider, account, refused[(provider, account)])
                else:
                    self.svc.accounts.auth_ok(provider, account)
            except Exception:  # noqa: BLE001 - the polls are stored; an account alert must not fail the batch
                log.exception("provider.account_event_failed", provider=provider, account=account)


def announce(item: ItemRef, written: list[Event], **context: str) -> None:
    """Count and log the events a poll (or a sweep storing a listed item) wrote."""
    if not written:
        return
    metrics.events([e.type for e in written])
    bound = log.bind(item_id=item.id, provider=item.provider, account=item.account, ref=item.ref, **context)
    for ev in written:
        bound.info("event.created", event_id=ev.id, type=ev.type, seq=ev.seq, status=ev.data.get("status"))


def _outcome_label(outcome: PollOutcome, written: bool, internal: bool = False) -> str:
    if not written:
        return "lost_lease"
    if internal:
        return "error"
    if outcome.error is not None:
        return "gone" if outcome.state.value == "gone" else "failed"
    return "changed" if outcome.snapshot is not None else "unchanged"
