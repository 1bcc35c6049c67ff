"""Issue 13: a poll that changed nothing reads no snapshot. Each item keeps its latest snapshot's
digest; the chunk poller compares the document it found with it, and reads snapshots only for
the polls that need one (a change, a failure, a 304, an item whose digest is not known yet).

The statements are read off the real database connection (SQLAlchemy's cursor events)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, func, inspect, select, text

from tests.integration.conftest import provider_service
from tests.integration.test_chunk_poll import make_service, track
from tests.integration.test_providers import ada_settings
from tests.integration.test_schedules import _downgrade
from tests.rows import update_items
from worker.documents import document_digest
from worker.domain import StatusDocument
from worker.retention import Cutoffs
from worker.store import repo
from worker.store.migrate import upgrade
from worker.store.models import Event, Item, Snapshot
from worker.store.prune import Pruner


@contextmanager
def snapshot_reads(engine):
    """Collects the statements that read the snapshots table while the block runs."""
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        text = " ".join(statement.split()).lower()
        if text.startswith("select") and "from snapshots" in text:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def poll_round(service) -> None:
    service.dispatch_due(service.poll_claims, lease_s=30, limit=1000, chunk_size=50)


def stored_digests(service) -> dict[int, tuple[str | None, str]]:
    """Item id -> (its recorded digest, the digest of its latest snapshot)."""
    with service.sessions.begin() as s:
        recorded = dict(s.execute(select(Item.id, Item.snapshot_digest)).all())
        out = {}
        for item_id in recorded:
            snap = s.scalars(select(Snapshot).where(Snapshot.item_id == item_id).order_by(Snapshot.id.desc())
                             .limit(1)).one()
            out[item_id] = (recorded[item_id], document_digest(StatusDocument(snap.status, snap.terminal,
                                                                                snap.fields)))
    return out


def test_unchanged_polls_read_no_snapshot_and_a_change_reads_only_its_own(engine, sim, clock):
    service = make_service(engine, sim, clock)
    track(service, sim, range(4001, 4011))
    poll_round(service)  # observed: every item gets its first snapshot, and its digest
    digests = stored_digests(service)
    assert len(digests) == 10 and all(mine == theirs for mine, theirs in digests.values())

    clock.advance(70)
    with snapshot_reads(engine) as reads:
        poll_round(service)
    assert reads == []
    assert service.events_after(0)[-1].type == "status.observed"  # nothing new

    clock.advance(70)
    sim.billit.set_stage(4004, sim.billit.stage_of(4004) + 1)
    with snapshot_reads(engine) as reads:
        poll_round(service)
    assert len(reads) == 1  # the changed item's previous snapshot, and no other
    last = service.events_after(0)[-1]
    assert last.type == "status.changed" and last.data["previous_status"] != last.data["status"]
    assert last.data["changes"]
    digests = stored_digests(service)
    assert all(mine == theirs for mine, theirs in digests.values())


def test_items_stored_before_the_digest_get_one_at_their_next_poll(engine, sim, clock):
    """As after migration 0016: snapshots, no digests. The next poll reads the snapshots, finds
    nothing changed and records the digests; the one after reads none."""
    service = make_service(engine, sim, clock)
    track(service, sim, range(4101, 4106))
    poll_round(service)
    with service.sessions.begin() as s:
        update_items(s, Item.id > 0, snapshot_digest=None)

    clock.advance(70)
    with snapshot_reads(engine) as reads:
        poll_round(service)
    assert reads  # read, as the digests were not known
    digests = stored_digests(service)
    assert all(mine is not None and mine == theirs for mine, theirs in digests.values())
    with service.sessions.begin() as s:
        assert s.scalar(select(Event.id).where(Event.type == "status.changed")) is None

    clock.advance(70)
    with snapshot_reads(engine) as reads:
        poll_round(service)
    assert reads == []


def test_a_304_uses_the_stored_document(engine, sim, wall):
    """Amili's cases answer 304 to their ETag: the poll reads the latest snapshot it stands for
    (a 200 with the same document would read none: see above), and stores no change."""
    sim.amili_ada.wall_time = lambda: wall().timestamp()
    service = provider_service(engine, wall, ada_settings(sim))
    case_id = sim.amili_ada.create_case(invoice_number="INV-88", scenario="paid")
    item_id = service.track("amili_ada", case_id, interval_s=5).id
    poll_round(service)
    (item,) = service.items()
    etag = item.version
    wall.advance(6)  # the case has not moved: the simulator's clock stands still
    with snapshot_reads(engine) as reads:
        poll_round(service)
    assert len(reads) == 1
    (item,) = service.items()
    assert item.last_error is None and item.last_polled_at == wall() and item.version == etag
    assert [e.type for e in service.events_after(0) if e.item_id == item_id] == ["status.observed"]
    mine, theirs = stored_digests(service)[item_id]
    assert mine == theirs


def test_the_migration_adds_the_digest_empty_and_takes_it_away(engine, sim, clock):
    """0016 on a store with items: no row is rewritten (the digests come with the next polls), and
    a downgrade drops only the column."""
    service = make_service(engine, sim, clock)
    track(service, sim, range(4201, 4204))
    poll_round(service)
    _downgrade(engine, "0015")
    with engine.begin() as conn:
        columns = [c["name"] for c in inspect(conn).get_columns("items")]
        assert "snapshot_digest" not in columns
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 3
    upgrade(engine)
    assert {mine for mine, _ in stored_digests(service).values()} == {None}
    clock.advance(70)
    poll_round(service)
    assert all(mine == theirs for mine, theirs in stored_digests(service).values())


def test_an_item_resumed_while_the_prune_removes_its_snapshots_is_observed_again(engine, sim, clock):
    """The prune removes a gone item's snapshots, then the item, unless it was resumed meanwhile:
    such an item is kept without snapshots, so it must not keep a digest standing for them."""
    service = make_service(engine, sim, clock)
    track(service, sim, [4301])
    poll_round(service)
    (item,) = service.items()
    with service.sessions.begin() as s:
        update_items(s, Item.id == item.id, state="gone", updated_at=clock() - timedelta(days=100))
    resumed: list[int] = []

    def resume_once_snapshots_are_gone() -> None:
        with service.sessions.begin() as s:
            left = s.scalar(select(func.count()).select_from(Snapshot).where(Snapshot.item_id == item.id))
        if left == 0 and not resumed:
            with service.sessions.begin() as s:
                repo.set_paused(s, item.id, False, now=clock())
            resumed.append(item.id)

    pruner = Pruner(service.sessions, clock=clock, sleep=lambda _s: resume_once_snapshots_are_gone())
    pruner.run(Cutoffs(events=None, attempts=None, finished_items=clock() - timedelta(days=90), snapshots_keep=None))
    if not resumed:  # PostgreSQL's prune does not stand aside between batches: resumed after it, kept
        assert engine.dialect.name == "postgresql"
        assert service.items() == []
        return
    (kept,) = service.items()
    assert kept.state == "active" and stored_digests_or_none(service, kept.id) is None
    clock.advance(70)
    poll_round(service)
    assert [e.type for e in service.events_after(0) if e.item_id == kept.id][-1] == "status.observed"


def stored_digests_or_none(service, item_id: int) -> str | None:
    with service.sessions.begin() as s:
        return s.scalar(select(Item.snapshot_digest).where(Item.id == item_id))
