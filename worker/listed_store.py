"""A sweep's listed items written as their polls would write them (issue 14): claimed with the
same lease, decided by the same policy, written by the chunk poller's own write. worker.listed
says when a list may be believed; the items it may not be believed for are made due, to be polled.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from worker.listed import Listed, ListedReport, compare, storable
from worker.polling import ChunkPoller, announce
from worker.polls import Poll, PollReport
from worker.store import items, repo
from worker.store.repo import Claim


def store_listed(chunks: ChunkPoller, provider: str, account: str, listed: Mapping[tuple[str, str], Listed],
                 lease_s: float) -> ListedReport:
    """Store what a sweep listed as polls of those items would (worker.listed says when the
    list may be believed); the items it may not be believed for are made due, to be polled,
    and those listed at a version already read are left alone."""
    svc, now = chunks.svc, chunks.svc.clock()
    parse = getattr(svc.providers.get(provider, account), "parse_modified", None)

    def fresh(key: tuple[str, str], stored: str | None) -> bool:
        return compare(listed[key].version, stored, parse) != 0

    with svc.sessions.begin() as session:
        claims, seen = items.claim_named(session, provider, account, listed, fresh=fresh, now=now, lease_s=lease_s)
        work = repo.load_work(session, claims)
    believed: list[Poll] = []
    hints: list[tuple[Claim, datetime]] = []
    for u in work:
        shown = listed[u.item.kind, u.item.ref]
        if (shown.doc is not None and u.state.consecutive_failures == 0
                and compare(shown.version, u.previous.version if u.previous else None, parse) != -1
                and storable(u.previous, shown.doc)):
            believed.append(Poll(u, doc=shown.doc, started_at=now))
        else:
            hints.append((u.claim, now))
    # Made due before the writes: should those fail, these are not held for the lease as well.
    with svc.sessions.begin() as session:
        due = repo.defer_many(session, hints, now=now)
    report = PollReport()
    chunks.write(believed, [], report)
    out = ListedReport(due=due, seen=seen)
    for poll in believed:
        if poll.written is None:  # a push moved the lease on meanwhile: that item is due, and polled
            out.due += 1
            continue
        out.stored += 1
        out.events.extend(e.id for e in poll.written)
        announce(poll.unit.item, poll.written, source="sweep")
    return out

