"""Incremental sweeps (issue 14): read a provider account's change list, make what changed due.

Per account with ``POLLER_<P>__SWEEP_SECONDS`` set, beat's sweep tick claims the account's row in
``sweeps`` (a lease, so two ticks or two workers never sweep one account at once), reads the
provider's list of what changed since the watermark, page by page, and makes each tracked item
it names due now, through the same lease and claim path as a push: the poll that follows writes
the event, once, and a poll already under way cannot store its older answer. Where the provider's
list carries the whole item (Billit's orders), each tracked item listed is instead claimed and its
listed document stored exactly as a poll would store it, with no call of its own; the list is
believed only when it shows a change and loses nothing the snapshot showed (worker.listed), so a
list that carries fewer fields than the item call can never make an item flap: those are polled.

The watermark moves only when every page of a sweep was read: a page that fails leaves it where
it was (the items already made due are polled anyway, which costs nothing but those polls).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, cast

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.backoff import failure_delay
from worker.clock import utcnow
from worker.discovery import DISCOVERED_LABELS, Condition, matches
from worker.domain import StatusDocument
from worker.errors import PollerError
from worker.ids import event_ids
from worker.listed import Listed, ListedReport
from worker.providers.registry import ProviderSet
from worker.reconcile import DEGRADED_AFTER, pull_in
from worker.store import items, repo
from worker.store.db import insert_for
from worker.store.models import Sweep
from worker.sweep_marks import Mark, SweepEntry, advance, load_mark, news

log = structlog.get_logger(__name__)

#: A sweep holds its account this long at most; one that crashed frees it by running out.
LEASE_S = 300.0
#: Failed sweeps back off from here, up to their interval times this.
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_FACTOR = 30


class Sweeping(Protocol):
    """A provider that can list what changed (worker.providers.billit.BillitProvider)."""

    def sweep(self, mark: Mark, now: datetime) -> Iterator[list[SweepEntry]]: ...

    def parse_modified(self, text: str) -> datetime: ...

    def listed_document(self, entry: SweepEntry) -> StatusDocument | None: ...

    #: How far before the watermark each sweep reads again (see worker.sweep_marks).
    overlap: timedelta


class Listing(Protocol):
    """A provider without a change list whose list of open items carries what the item read
    carries (worker.providers.amili_collection): each sweep reads the whole list and compares."""

    #: The kinds of item the list holds, and the statuses an item must have to be in it.
    listed_kinds: tuple[str, ...]
    listed_statuses: frozenset[str]

    def listing(self, now: datetime) -> Iterator[list[tuple[str, str, StatusDocument]]]: ...


#: Stores a sweep's listed items as polls would (PollerService.store_listed).
StoreListed = Callable[[str, str, Mapping[tuple[str, str], Listed]], ListedReport]


@dataclass
class SweepResult:
    """What one sweep did: ``outcome`` ``ok`` or ``failed``, and counts of what entries led to."""

    provider: str
    account: str
    outcome: str
    pages: int = 0
    entries: Counter[str] = field(default_factory=Counter)
    error: str | None = None


class Sweeper:
    """Runs the sweeps that are due.

    Args:
        sessions: the database.
        providers: the adapters (each sweeping one must have ``sweep``).
        intervals: ``(provider, account)`` -> seconds between sweeps, for every account that sweeps.
        kick: asks the dispatch tick to run now; None waits for the next tick.
        entropy: random bytes for event ids (``provider.degraded``, ``provider.restored``).
        discover: ``(provider, account)`` -> the discovery filter, for the accounts that track what
            their sweep finds untracked (worker.discovery), at ``discover_interval_s``.
        store: stores listed documents as polls would (PollerService.store_listed); None makes
            every listed item due instead.
        deliver: asks for delivery now, after a sweep stored events; None waits for the next tick.
    """

    def __init__(self, sessions: sessionmaker[Session], providers: ProviderSet,
                 intervals: Mapping[tuple[str, str], float], *,
                 kick: Callable[[], None] | None = None, clock: Callable[[], datetime] = utcnow,
                 rand: Callable[[], float] = random.random,
                 entropy: Callable[[int], bytes] = os.urandom,
                 discover: Mapping[tuple[str, str], Sequence[Condition]] | None = None,
                 discover_interval_s: float = 300.0, store: StoreListed | None = None,
                 deliver: Callable[[], None] | None = None) -> None:
        self.sessions, self.providers, self.intervals = sessions, providers, intervals
        self.store, self.deliver = store, deliver
        self.kick, self.clock, self.rand, self.entropy = kick, clock, rand, entropy
        self.discover, self.discover_interval_s = dict(discover or {}), discover_interval_s

    def run_due(self) -> list[SweepResult]:
        """Every sweep that is due and not under way elsewhere, one after another."""
        results = []
        for provider, account in sorted(self.intervals):
            stored = self._claim(provider, account)
            if stored is not None:
                results.append(self._run(provider, account, *stored))
        for kick, wanted in ((self.kick, "due"), (self.deliver, "stored")):
            if kick is not None and any(r.entries[wanted] for r in results):
                try:
                    kick()
                except Exception:  # noqa: BLE001 - the next tick does it anyway
                    log.warning("sweep.kick_failed", kick=wanted)
        return results

    def _claim(self, provider: str, account: str) -> tuple[str | None, str] | None:
        """Take the account's sweep if it is due and free; its stored watermark and at-mark list."""
        now = self.clock()
        with self.sessions.begin() as s:
            # Insert-or-nothing: two workers' first sweeps of an account at once both go on.
            dialect_insert = insert_for(s)
            s.execute(dialect_insert(Sweep).values(provider=provider, account=account, at_mark="[]", failures=0,
                                                   updated_at=now).on_conflict_do_nothing())
            row = s.execute(
                update(Sweep).where(Sweep.provider == provider, Sweep.account == account,
                                    or_(Sweep.next_at.is_(None), Sweep.next_at <= now),
                                    or_(Sweep.lease_until.is_(None), Sweep.lease_until <= now))
                .values(lease_until=now + timedelta(seconds=LEASE_S), updated_at=now)
                .returning(Sweep.watermark, Sweep.at_mark).execution_options(synchronize_session=False)).first()
        return None if row is None else (row.watermark, row.at_mark)

    def _run(self, provider: str, account: str, watermark: str | None, at_mark: str) -> SweepResult:
        result = SweepResult(provider, account, "ok")
        read: list[SweepEntry] = []
        mark, overlap = Mark(), timedelta(0)
        try:
            adapter = self.providers.get(provider, account)
            if hasattr(adapter, "listing"):
                self._full_pass(cast(Listing, adapter), provider, account, result)
            else:
                changes = cast(Sweeping, adapter)
                mark, overlap = load_mark(watermark, at_mark, changes.parse_modified), changes.overlap
                for page in changes.sweep(mark, self.clock()):
                    result.pages += 1
                    read.extend(page)
                    fresh = news(page, mark)
                    result.entries["seen"] += len(page) - len(fresh)
                    self._act(provider, account, fresh, result)
        except PollerError as err:
            result.outcome, result.error = "failed", f"{type(err).__name__}: {err}"
        except Exception as err:  # noqa: BLE001 - a bug must not hold the account's lease for LEASE_S
            log.exception("sweep.crashed", provider=provider, account=account)
            result.outcome, result.error = "failed", f"{type(err).__name__}: {err}"
        self._record(result, advance(mark, read, overlap) if result.outcome == "ok" else None)
        metrics.sweep(provider, result.outcome, result.entries)
        if result.outcome == "ok":
            log.info("sweep.ok", provider=provider, account=account, pages=result.pages, **result.entries)
        else:
            log.error("sweep.failed", provider=provider, account=account, pages=result.pages, error=result.error)
        return result

    def _full_pass(self, adapter: Listing, provider: str, account: str, result: SweepResult) -> None:
        """Read the whole list, then make due what differs from its snapshot or left the list. The
        comparison waits for the last page: an item is missing only from a complete pass."""
        listed: dict[tuple[str, str], StatusDocument] = {}
        for page in adapter.listing(self.clock()):
            result.pages += 1
            listed.update(((kind, ref), doc) for kind, ref, doc in page)
        with self.sessions.begin() as s:
            named, unchanged = items.differing(s, provider, account, listed, kinds=adapter.listed_kinds,
                                               listed_statuses=adapter.listed_statuses)
            due = items.make_due(s, provider, account, named, now=self.clock())
        result.entries["due"] += len(due)
        result.entries["seen"] += unchanged
        # Listed but not tracked (or finished), and listed changes of items no longer active.
        result.entries["ignored"] += max(0, len(listed) - unchanged - len(due))

    def _act(self, provider: str, account: str, entries: list[SweepEntry], result: SweepResult) -> None:
        if not entries:
            return
        adapter = self.providers.get(provider, account)
        listed: dict[tuple[str, str], Listed] = {}
        if self.store is not None and hasattr(adapter, "listed_document"):
            # Every entry goes through the store: one listed at a version already read needs
            # nothing, and only there is the stored version compared.
            listed = {(e.kind, e.ref): Listed(e.modified, cast(Sweeping, adapter).listed_document(e)) for e in entries}
        stored = self.store(provider, account, listed) if self.store is not None and listed else ListedReport()
        conditions = self.discover.get((provider, account))
        with self.sessions.begin() as s:
            due = items.make_due(s, provider, account, [(e.kind, e.ref) for e in entries
                                                         if (e.kind, e.ref) not in listed], now=self.clock())
            found: list[int] = []
            if conditions is not None:
                kinds = getattr(adapter, "discover_kinds", None)
                wanted = [(e.kind, e.ref) for e in entries
                          if (kinds is None or e.kind in kinds) and matches(conditions, e.attrs)]
                found = items.discover(s, provider, account, wanted, labels=DISCOVERED_LABELS,
                                       interval_s=self.discover_interval_s, now=self.clock())
        result.entries["stored"] += stored.stored
        result.entries["due"] += len(due) + stored.due
        result.entries["seen"] += stored.seen
        result.entries["discovered"] += len(found)
        if found:
            log.info("sweep.discovered", provider=provider, account=account, items=len(found))
        # Not tracked (nor discovered), or no longer active (terminal, gone): nothing to poll.
        result.entries["ignored"] += len(entries) - len(due) - stored.due - stored.stored - stored.seen - len(found)

    def _record(self, result: SweepResult, mark: Mark | None) -> None:
        now = self.clock()
        interval = self.intervals[result.provider, result.account]
        with self.sessions.begin() as s:
            row = s.execute(select(Sweep).where(Sweep.provider == result.provider, Sweep.account == result.account)
                            .with_for_update()).scalar_one()
            row.lease_until, row.updated_at = None, now
            failed_before = row.failures
            if mark is not None:
                row.watermark, row.at_mark = mark.watermark, mark.to_json()
                row.ok_at, row.failures, row.error = now, 0, None
                row.next_at = now + timedelta(seconds=interval)
            else:
                row.failures += 1
                row.error = result.error
                delay = failure_delay(row.failures, base=min(BACKOFF_BASE_S, interval),
                                      cap=interval * BACKOFF_CAP_FACTOR, rand=self.rand())
                row.next_at = now + timedelta(seconds=max(delay, interval))
            if mark is None and row.failures >= DEGRADED_AFTER and row.degraded_at is None:
                row.degraded_at = now
                pulled = pull_in(s, result.provider, result.account, now)
                self._event(s, "provider.degraded", result, row.failures, now)
                log.error("provider.degraded", provider=result.provider, account=result.account,
                          failures=row.failures, items_pulled_in=pulled, error=result.error)
            elif mark is not None and row.degraded_at is not None:
                row.degraded_at = None
                self._event(s, "provider.restored", result, failed_before, now)
                log.warning("provider.restored", provider=result.provider, account=result.account)

    def _event(self, session: Session, etype: str, result: SweepResult, failures: int, now: datetime) -> None:
        data = {"provider": result.provider, "account": result.account, "failures": failures, "calls": 0,
                "paused_until": None, "error": result.error}
        repo.add_system_event(session, event_ids(now, self.entropy(10), 1)[0], etype, data, now=now)
        metrics.events([etype])
