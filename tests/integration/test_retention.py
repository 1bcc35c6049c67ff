"""Issue 13: retention. The prune removes old history in batches on both databases, and never what
a subscriber still waits for, an item's latest snapshot, or anything newer than its cutoff; a
cursor from before what it removed gets a clear error naming the oldest retained event."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta

import pytest
import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import select

from config.celery_app import PRUNE_TASK, create_app
from config.settings import Settings, get_settings
from tests.conftest import TEST_SECRET_KEY
from tests.rows import update_items
from worker.errors import ConfigurationError, CursorExpired
from worker.feed import EventFeed
from worker.metrics_state import StateCollector
from worker.pruning import RetentionService
from worker.retention import Retention
from worker.status import read_status
from worker.store import repo
from worker.store.models import Delivery, DeliveryAttempt, Event, Item, RetentionMark, Snapshot

DAY = 86400.0
#: Nothing but what a test names is pruned.
KEEP_ALL = Retention(events_s=None, snapshots_keep=None, attempts_s=None, finished_items_s=None)


def pruned(table: str) -> float:
    return REGISTRY.get_sample_value("poller_pruned_total", {"table": table}) or 0.0


def events(stack) -> list[Event]:
    with stack.sessions.begin() as s:
        return list(s.scalars(select(Event).order_by(Event.position)))


def pause(stack, item_id: int) -> None:
    with stack.sessions.begin() as s:  # no more polls (and events) of it
        update_items(s, Item.id == item_id, state="paused", next_poll_at=None)


def service(stack, retention: Retention, batch: int = 3) -> RetentionService:
    return RetentionService(stack.sessions, retention, clock=stack.clock, batch=batch)


def test_an_event_a_failing_subscriber_waits_for_survives_and_latest_snapshots_stay(stack, receiver):
    """Item 1's events went to a healthy subscriber; item 2's also to one that keeps failing. After
    31 days: item 1's events go (in batches of 3), item 2's stay with their pending deliveries; each
    item keeps its latest snapshot and one more; attempts of finished deliveries go; the dry run
    counted exactly what went."""
    stack.subs.add(receiver.url)
    first = stack.orders(1, stages=3)[0]
    pause(stack, first)  # no more events of it once the failing subscriber exists
    stack.subs.add("http://127.0.0.1:1/refused")  # nothing listens: every attempt fails, retrying
    second = stack.orders(1, stages=3)[0]
    stack.deliver()
    receiver.wait_for(8)
    stack.clock.advance(31 * DAY)
    retention = Retention(events_s=30 * DAY, snapshots_keep=1, attempts_s=30 * DAY, finished_items_s=90 * DAY)
    before = {t: pruned(t) for t in ("events", "snapshots", "delivery_attempts")}
    plan = service(stack, retention).plan()
    removed = service(stack, retention).prune()
    assert removed == plan
    assert (removed["events"], removed["snapshots"], removed["items"]) == (4, 4, 0)
    assert {e.item_id for e in stack.rows(Event)} == {second}
    pending = [d for d in stack.rows(Delivery) if d.state == "pending"]
    assert len(pending) == 4 and {d.item_id for d in pending} == {second}
    attempts = stack.rows(DeliveryAttempt)
    assert attempts and {a.delivery_id for a in attempts} <= {d.id for d in pending}
    assert removed["delivery_attempts"] == 8  # every succeeded one (the healthy subscriber's), none pending
    with stack.sessions.begin() as s:
        for item_id in (first, second):
            ids = s.scalars(select(Snapshot.id).where(Snapshot.item_id == item_id).order_by(Snapshot.id)).all()
            latest = s.scalar(select(Snapshot.id).where(Snapshot.item_id == item_id).order_by(Snapshot.id.desc()))
            assert len(ids) == 2 and ids[-1] == latest
    assert {t: pruned(t) - before[t] for t in before} == {"events": 4, "snapshots": 4, "delivery_attempts": 8}
    assert service(stack, retention).prune() == dict.fromkeys(removed, 0)  # nothing left to do
    assert read_status(stack.sessions, tick_s=5, clock=stack.clock).last_prune == stack.clock()
    stack.clock.advance(3600)
    scrape = CollectorRegistry()
    scrape.register(StateCollector(stack.sessions, tick_s=5, clock=stack.clock))
    assert scrape.get_sample_value("poller_prune_last_run_age_seconds") == 3600.0


def test_a_cursor_before_the_retained_events_is_refused_naming_the_oldest(stack):
    """Positions 1-4 pruned: a cursor at any of them (even one whose event is gone) is refused,
    naming the oldest retained event; a cursor from it on reads on; no cursor starts there."""
    pause(stack, stack.orders(1, stages=3)[0])
    stack.clock.advance(31 * DAY)
    stack.orders(1, stages=3)
    old = events(stack)
    service(stack, Retention(events_s=30 * DAY, snapshots_keep=None, attempts_s=None, finished_items_s=None)).prune()
    kept = events(stack)
    assert [e.id for e in kept] == [e.id for e in old[4:]]
    feed = EventFeed(stack.sessions)
    for gone in (old[0].id, old[3].id):
        with pytest.raises(CursorExpired) as err:
            feed.page(after=gone, limit=10)
        assert kept[0].id in str(err.value) and err.value.field == "after"
        with pytest.raises(CursorExpired):
            stack.poller.cursor_position(gone)  # `poller events --after`
    assert [e.id for e in feed.page(after=kept[0].id, limit=10)[0]] == [e.id for e in kept[1:]]
    assert [e.id for e in feed.page(after=None, limit=10)[0]] == [e.id for e in kept]
    with stack.sessions.begin() as s:
        assert s.get(RetentionMark, "events").position == old[3].position


def test_the_api_answers_410_for_a_pruned_cursor(stack, api):
    """Over HTTP: 410 Gone, a problem document naming the field and the oldest retained event."""
    pause(stack, stack.orders(1, stages=1)[0])
    stack.clock.advance(31 * DAY)
    stack.orders(1, stages=1)
    gone = events(stack)[0].id
    service(stack, Retention(events_s=30 * DAY, snapshots_keep=None, attempts_s=None, finished_items_s=None)).prune()
    oldest = events(stack)[0].id
    r = api.client().get("/v1/events", params={"after": gone})
    assert r.status_code == 410, r.text
    body = r.json()
    assert oldest in body["detail"] and body["invalid_params"][0]["name"] == "after"


def test_finished_and_untracked_items_go_with_their_history_after_their_retention(stack):
    """A terminal item and an untracked one, 91 days on: the terminal item, its snapshots and
    events go, and so do the untracked one's events; the active item keeps everything."""
    active, terminal, untracked = stack.orders(3, stages=1)
    with stack.sessions.begin() as s:
        update_items(s, Item.id == terminal, state="terminal", next_poll_at=None)
        repo.delete_item(s, untracked)  # what `poller untrack` does
    stack.clock.advance(89 * DAY)
    retention = Retention(events_s=None, snapshots_keep=None, attempts_s=None, finished_items_s=90 * DAY)
    assert service(stack, retention).prune()["items"] == 0  # not yet 90 days since its last change
    stack.clock.advance(2 * DAY)
    removed = service(stack, retention).prune()
    assert (removed["items"], removed["events"], removed["snapshots"]) == (1, 4, 2)
    assert [i.id for i in stack.rows(Item)] == [active]
    assert {e.item_id for e in stack.rows(Event)} == {active}
    assert {s.item_id for s in stack.rows(Snapshot)} == {active}


def test_keeping_everything_removes_nothing(stack):
    stack.orders(2, stages=2)
    stack.clock.advance(3650 * DAY)
    assert set(service(stack, KEEP_ALL).prune().values()) == {0}
    assert len(stack.rows(Event)) == 6


def test_retention_settings_are_checked_and_beat_prunes_daily_at_prune_at():
    """Each setting takes a duration, a count, 0 or forever; a bad one names the variable; beat
    sends the prune once a day at POLLER_PRUNE_AT (UTC)."""
    s = Settings(retention_events="forever", retention_snapshots_keep="0", retention_attempts="12h",
                 retention_finished_items="400d", prune_at="04:15", broker_url="memory://")
    assert s.retention() == Retention(events_s=None, snapshots_keep=None, attempts_s=12 * 3600.0,
                                      finished_items_s=400 * DAY)
    entry = create_app(s).conf.beat_schedule["prune"]
    assert entry["task"] == PRUNE_TASK
    assert entry["schedule"].hour == {4} and entry["schedule"].minute == {15}
    for name, value in (("retention_events", "soon"), ("retention_snapshots_keep", "-1"), ("prune_at", "25:00")):
        with pytest.raises((ConfigurationError, ValueError)) as err:
            Settings(**{name: value})
        assert name in str(err.value).lower() or name.upper() in str(err.value)


def test_a_cutoff_keeps_what_is_newer(stack):
    """Events younger than the retention stay, to the second."""
    stack.orders(1, stages=0)
    stack.clock.advance(30 * DAY - 60)
    assert service(stack, Retention(events_s=30 * DAY, snapshots_keep=None, attempts_s=None,
                                    finished_items_s=None)).prune()["events"] == 0
    stack.clock.now += timedelta(seconds=120)
    assert service(stack, Retention(events_s=30 * DAY, snapshots_keep=None, attempts_s=None,
                                    finished_items_s=None)).prune()["events"] == 1


def test_removing_a_finished_items_history_refuses_no_cursor_among_kept_events(stack):
    """Events kept for ever, finished items for 90 days: the finished item's events, newer in the
    stream than the kept ones, go; a cursor at a kept event still reads on (the mark that refuses
    cursors moves only with the age cutoff, which removes the stream's oldest events)."""
    kept_item = stack.orders(1, stages=1)[0]
    pause(stack, kept_item)
    gone_item = stack.orders(1, stages=1)[0]
    kept = [e for e in events(stack) if e.item_id == kept_item]
    with stack.sessions.begin() as s:
        update_items(s, Item.id == gone_item, state="terminal", next_poll_at=None, updated_at=stack.clock())
    stack.clock.advance(91 * DAY)
    removed = service(stack, Retention(events_s=None, snapshots_keep=None, attempts_s=None,
                                       finished_items_s=90 * DAY)).prune()
    assert removed["items"] == 1 and removed["events"] == 2
    assert [e.id for e in events(stack)] == [e.id for e in kept]
    feed = EventFeed(stack.sessions)
    assert [e.id for e in feed.page(after=kept[0].id, limit=10)[0]] == [kept[1].id]
    with stack.sessions.begin() as s:
        assert s.get(RetentionMark, "events") is None


def test_beats_daily_prune_runs_in_a_process_of_its_own(stack, db_url, tmp_path, monkeypatch, request):
    """The prune task runs `poller prune` in a child process, with the worker's environment, and
    returns its counts: in the worker's own process (a threads pool by default) the prune's Python
    work would hold the GIL the polls' and deliveries' database calls wait for."""
    from tasks.maintenance import prune

    stack.orders(2, stages=1)  # 4 events of the test clock's 2026-11-23: days old by the wall clock
    for name, value in {"POLLER_DATABASE_URL": db_url, "POLLER_HOME": str(tmp_path / "var"),
                        "POLLER_SECRET_KEYS": TEST_SECRET_KEY, "POLLER_RETENTION_EVENTS": "1d"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    with structlog.testing.capture_logs() as logs:
        assert prune()["events"] == 4
    assert events(stack) == []
    (done,) = [entry for entry in logs if entry["event"] == "prune.done"]
    assert done["events"] == 4 and done["pid"] != os.getpid()


def test_a_prune_that_fails_fails_its_task(tmp_path, monkeypatch, request):
    """A child that cannot prune (here: no database) fails the task, which says where its error is."""
    from tasks.maintenance import prune
    from worker.errors import PollerError

    monkeypatch.setenv("POLLER_DATABASE_URL", f"sqlite+pysqlite:///{tmp_path / 'missing' / 'poller.db'}")
    monkeypatch.setenv("POLLER_HOME", str(tmp_path / "var"))
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    with pytest.raises(PollerError, match=r"`poller prune` exited with status \d+; its error is logged above"):
        prune()


def test_a_prune_child_times_out_and_is_the_pollers_own(tmp_path, monkeypatch, request):
    """A task whose time is up ends with its child's time-out; the child runs the poller's own
    `poller prune` whatever the worker's working directory holds."""
    from tasks.maintenance import prune_in_child
    from worker.errors import PollerError

    # A working directory with a `cli/` of its own: the child still runs the poller's.
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "main.py").write_text("raise SystemExit('not the poller')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POLLER_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("POLLER_DATABASE_URL", f"sqlite+pysqlite:///{tmp_path / 'poller.db'}")
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    with pytest.raises(subprocess.TimeoutExpired):
        prune_in_child(timeout_s=0.05)  # the child is still importing when its time is up
    with pytest.raises(PollerError, match="`poller prune` exited with status 2"):
        prune_in_child(timeout_s=60)  # the poller's own error: no database (not the cli/ above)


def test_each_kind_of_history_starts_with_a_small_batch(stack):
    """The batch size grows to what holds the locks about 25 ms, but each kind starts small: the
    size attempts alone grew to held the locks 100-200 ms on the first batch of events (with
    their deliveries and attempts) at 10,000,000 events, and SQLite's other writers waited."""
    from worker.store.prune import MIN_BATCH, Pruner

    stack.orders(40, stages=1)  # 80 events
    batches: list[tuple[str, int]] = []
    Pruner(stack.sessions, clock=stack.clock, batch=1000, progress=lambda t, n: batches.append((t, n))).run(
        Retention(events_s=DAY, snapshots_keep=None, attempts_s=DAY, finished_items_s=None).cutoffs(
            stack.clock() + timedelta(days=2)))
    first = {}
    for table, n in batches:
        first.setdefault(table, n)
    assert first["events"] == MIN_BATCH and sum(n for t, n in batches if t == "events") == 80


def test_a_prune_vacuums_the_tables_it_deleted_from(stack, engine):
    """On PostgreSQL the rows a prune deletes leave dead entries at the start of each index until a
    VACUUM: after a day's prune of 10,000,000 events, reading the oldest event stepped over 1,825
    pages (5-15 ms of `poller status`; the events API's first page too), and autovacuum waits for a
    fifth of a table, about six days of prunes. So the prune vacuums what it deleted from."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite frees a deleted row's index entries at once")

    def vacuumed() -> dict[str, object]:
        with engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT relname, last_vacuum FROM pg_stat_user_tables").all())

    stack.orders(4, stages=1)
    stack.clock.advance(2 * DAY)
    before = vacuumed()
    assert service(stack, Retention(events_s=DAY, snapshots_keep=None, attempts_s=None,
                                    finished_items_s=None)).prune()["events"] == 8
    after = vacuumed()
    assert [t for t in ("events", "deliveries", "delivery_attempts") if after[t] is None or after[t] == before[t]] == []
    assert after["snapshots"] == before["snapshots"] and after["items"] == before["items"]  # nothing deleted there


def test_a_table_the_role_may_not_vacuum_is_logged_not_lost(engine):
    """PostgreSQL skips a table the role does not own with a warning to the client, not an error:
    the prune logs it (the child's log is the worker's), or it would land nowhere."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has nothing to vacuum after a prune")
    from worker.store.db import vacuum

    with structlog.testing.capture_logs() as logs:
        vacuum(engine, ["pg_authid"])  # a shared catalog: only a superuser may vacuum it
    skipped = [e for e in logs if e["event"] == "store.vacuum_skipped"]
    assert len(skipped) == 1 and "pg_authid" in skipped[0]["reason"] and skipped[0]["log_level"] == "warning", logs
