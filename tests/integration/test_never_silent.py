"""Issue 9, silent failures: ids never reused, failures after the fetch, non-finite numbers,
permanent failures reported at once, stuck items, fair deferral. Real databases, real HTTP."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, insert, select, text

from worker.catalog import Catalog
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.status import STUCK_AFTER_CLAIMS, check_health, read_status
from worker.store import repo
from worker.store.db import make_engine, make_sessionmaker, sqlite_url
from worker.store.migrate import upgrade
from worker.store.models import Event, Item
from worker.subscriptions import Subscriptions

POLICY = PollPolicy(backoff_base_s=2, backoff_max_s=60, jitter_ratio=0.1, failing_after=3)


def make_service(engine, sim, clock, **billit) -> PollerService:
    settings = BillitSettings(**({"base_url": sim.url, "api_key": "sim-billit-key", "party_id": "1234"} | billit))
    providers = ProviderSet({"billit": settings}, ProviderContext(http=HttpOptions(timeout_s=2), clock=clock))
    return PollerService(make_sessionmaker(engine), providers, POLICY, clock=clock, rng=random.Random(7))


@pytest.fixture
def service(engine, sim, clock):
    return make_service(engine, sim, clock)


def poll_round(service) -> int:
    return service.dispatch_due(service.poll_claims, lease_s=30, limit=1000, chunk_size=5)


def polls(outcome: str) -> float:
    return REGISTRY.get_sample_value("poller_polls_total", {"provider": "billit", "outcome": outcome}) or 0.0


def types(service) -> list[str]:
    return [e.type for e in service.events_after(0)]


# -- 1. ids ------------------------------------------------------------------------------------

def test_ids_of_items_subscriptions_and_events_are_never_reused(service, engine, sim, clock):
    """Issue 9 #1: untrack then track gave the old id again; the new item's events collided."""
    sim.billit.create_order(1001)
    sim.billit.create_order(1006)
    first = service.track("billit", "1001", interval_s=5).id
    poll_round(service)
    Catalog(service.sessions, service.providers, default_interval_s=60).untrack(first)
    second = service.track("billit", "1006", interval_s=5).id
    assert second > first
    poll_round(service)
    (it,) = service.items()
    assert it.last_error is None and it.last_status == "to_send"
    assert [(e.item_id, e.seq) for e in service.events_after(0)] == [(first, 1), (second, 1)]

    subs = Subscriptions(make_sessionmaker(engine), allow_http=True, allow_private=True, known_providers=("billit",))
    sub, _ = subs.add("http://127.0.0.1:9/a")
    subs.remove(sub.id)
    again, _ = subs.add("http://127.0.0.1:9/b")
    assert again.id > sub.id

    with engine.begin() as conn:
        last = conn.scalar(select(Event.position).order_by(Event.position.desc()).limit(1))
        conn.execute(delete(Event).where(Event.position == last))
    sim.billit.set_stage(1006, 1)
    clock.advance(10)
    poll_round(service)
    assert service.events_after(0)[-1].position > last


def test_migration_starts_the_item_counter_past_every_id_the_history_names(tmp_path):
    """Issue 9 #1: a database from before the fix, whose item 4 was untracked, never hands out 4 again."""
    engine = make_engine(sqlite_url(tmp_path / "old.db"))
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO items (id, provider, account, kind, ref, interval_s, state, lease_id, "
                          "consecutive_failures, failing, event_seq, created_at, updated_at) VALUES (1, 'billit', "
                          "'default', 'order', '1', 5, 'active', 0, 0, 0, 1, '2026-01-01', '2026-01-01')"))
        conn.execute(text("INSERT INTO snapshots (item_id, taken_at, status, terminal, fields) "
                          "VALUES (1, '2026-01-01', 'to_send', 0, '{}')"))
        conn.execute(text("INSERT INTO events (id, item_id, seq, type, data, created_at) VALUES "
                          "('evt_a', 1, 1, 'status.observed', '{}', '2026-01-01'), "
                          "('evt_b', 4, 1, 'status.observed', '{}', '2026-01-01')"))
        conn.execute(text("INSERT INTO events (id, item_id, seq, type, data, created_at) VALUES ('evt_c', NULL, "
                          "NULL, 'subscription.disabled', '{\"subscription_id\": 7}', '2026-01-01')"))
    upgrade(engine)
    with engine.begin() as conn:
        assert conn.scalar(text("SELECT count(*) FROM snapshots")) == 1  # the rebuild cascaded nothing
        conn.execute(text("INSERT INTO items (provider, account, kind, ref, interval_s, state, "
                          "consecutive_failures, failing, event_seq, created_at, updated_at) "
                          "VALUES ('billit', 'default', 'order', '2', 5, 'active', 0, 0, 0, '2026-01-01', "
                          "'2026-01-01')"))
        assert conn.scalar(text("SELECT max(id) FROM items")) == 5
        conn.execute(text("INSERT INTO subscriptions (kind, url, state, created_at, updated_at) "
                          "VALUES ('webhook', 'https://example.com/', 'active', '2026-01-01', '2026-01-01')"))
        assert conn.scalar(text("SELECT max(id) FROM subscriptions")) == 8
    engine.dispose()


# -- 2. failures after the fetch ---------------------------------------------------------------

def test_a_result_that_cannot_be_stored_lands_on_the_item(service, engine, sim, clock):
    """Issue 9 #2: a write failure raised out of the task, recorded nothing, and was re-polled forever.

    The cause here is the one of #1 (an event already holds the seq the item hands out next): the
    failure lands on the item, and the sequence is repaired so the next poll stores normally.
    """
    sim.billit.create_order(1001)
    item_id = service.track("billit", "1001", interval_s=5).id
    with engine.begin() as conn:  # an event that takes the seq the first observation needs
        conn.execute(insert(Event).values(id="evt_squatter", item_id=item_id, seq=1, type="status.observed",
                                          data={}, created_at=clock()))
    before = polls("error")
    assert poll_round(service) == 1
    (it,) = service.items()
    assert "could not store the result: IntegrityError" in it.last_error
    assert it.consecutive_failures == 1 and not it.failing  # poll.failing after the usual count
    assert timedelta(seconds=1) <= it.next_poll_at - clock() <= timedelta(seconds=3)  # backoff, not the lease
    assert polls("error") == before + 1
    checks = {c.name: c for c in check_health(make_sessionmaker(engine), tick_s=5, max_lag_s=60, broker_ping=None,
                                              clock=clock)}
    assert checks["items"].ok and "1 retrying after a failure" in checks["items"].detail  # not yet alerting
    assert read_status(make_sessionmaker(engine), tick_s=5, clock=clock).retrying == 1
    clock.advance(3)
    poll_round(service)
    (it,) = service.items()
    assert it.last_status == "to_send" and it.consecutive_failures == 0
    assert [(e.seq, e.type) for e in service.events_after(0)] == [(1, "status.observed"), (2, "status.observed")]


REFUSE_TO_SEND = {
    "sqlite": ["CREATE TRIGGER refuse BEFORE INSERT ON snapshots WHEN NEW.status = 'to_send' "
               "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"],
    "postgresql": ["CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.status = 'to_send' THEN "
                   "RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
                   "CREATE TRIGGER refuse BEFORE INSERT ON snapshots FOR EACH ROW EXECUTE FUNCTION refuse()"],
}


def test_a_result_that_never_stores_alerts_after_the_usual_count(service, engine, sim, clock):
    """Issue 9 #2: a persistent write failure backs off and raises poll.failing, visible everywhere."""
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    with engine.begin() as conn:
        for statement in REFUSE_TO_SEND[engine.dialect.name]:
            conn.exec_driver_sql(statement)
    for _ in range(POLICY.failing_after):
        assert poll_round(service) == 1
        (it,) = service.items()
        clock.now = it.next_poll_at
    assert "refused by a trigger" in it.last_error and it.failing
    assert types(service) == ["poll.failing"]
    st = read_status(make_sessionmaker(engine), tick_s=5, clock=clock)
    assert st.failing == 1 and st.stuck == 0


def test_items_claimed_lease_after_lease_without_a_poll_are_stuck(service, engine, sim, clock):
    """Issue 9 #2: the poller_items_stuck gauge, status and health see an item nobody completes."""
    from worker.metrics_state import StateCollector

    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    sessions = make_sessionmaker(engine)
    for _ in range(STUCK_AFTER_CLAIMS):
        assert service.dispatch_due(lambda chunk: None, lease_s=30, limit=10, chunk_size=5) == 1  # lost in transit
        clock.advance(31)
    assert read_status(sessions, tick_s=5, clock=clock).stuck == 1
    gauge = {s.name: s.value for m in StateCollector(sessions, 5, clock=clock).collect() for s in m.samples
             if s.name == "poller_items_stuck"}
    assert gauge == {"poller_items_stuck": 1}
    checks = {c.name: c for c in check_health(sessions, tick_s=5, max_lag_s=600, broker_ping=None, clock=clock)}
    assert not checks["items"].ok and "1 stuck" in checks["items"].detail
    poll_round(service)
    assert read_status(sessions, tick_s=5, clock=clock).stuck == 0


# -- 4. non-finite numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused_at_the_edge(service, sim, clock, value):
    """Issue 9 #4: a NaN field gave a status.changed (and a webhook) on every poll."""
    sim.billit.create_order(1001)
    service.track("billit", "1001", interval_s=5)
    poll_round(service)
    sim.faults.add("billit", "drift", set={"Messages": [{"FileID": value}]})
    for _ in range(3):
        clock.advance(61)
        poll_round(service)
    (it,) = service.items()
    assert "not strict JSON" in it.last_error
    assert types(service) == ["status.observed", "poll.failing"]


# -- 5. permanent failures ---------------------------------------------------------------------

def test_refused_credentials_alert_at_once_and_once_per_account(service, engine, sim, clock):
    """Issue 9 #5: a revoked key waited hours for poll.failing; now at once, plus one provider.auth_failed."""
    for ref in (1001, 1002, 1003):
        sim.billit.create_order(ref)
        service.track("billit", str(ref), interval_s=5)
    sim.faults.add("billit", "401")
    poll_round(service)
    assert sorted(types(service)) == ["poll.failing"] * 3 + ["provider.auth_failed"]
    clock.advance(61)
    poll_round(service)
    assert types(service).count("provider.auth_failed") == 1
    checks = {c.name: c for c in check_health(make_sessionmaker(engine), tick_s=5, max_lag_s=600, broker_ping=None,
                                              clock=clock)}
    assert not checks["providers"].ok and "billit/default" in checks["providers"].detail


def test_many_workers_refused_at_once_raise_one_auth_failed(engine, clock):
    """Issue 9 #5: every item of an account meets the revoked key at the same moment, on many threads."""
    from concurrent.futures import ThreadPoolExecutor

    from worker.accounts import AccountEvents
    from worker.errors import ProviderResponseInvalid

    accounts = AccountEvents(make_sessionmaker(engine), clock)
    error = ProviderResponseInvalid("GET /v1/orders/1 answered 401", provider="billit", status_code=401)
    with ThreadPoolExecutor(8) as pool:
        raised = list(pool.map(lambda _: accounts.auth_failed("billit", "default", error), range(16)))
    assert raised.count(True) == 1
    with engine.begin() as conn:
        assert conn.scalar(select(func.count()).select_from(Event).where(Event.type == "provider.auth_failed")) == 1


def test_a_forbidden_item_is_not_an_account_alert(service, sim, clock):
    """Issue 9 #5: a 403 may forbid one item only; it fails that item, not the account."""
    from worker.errors import ProviderResponseInvalid, is_credential_failure

    assert not is_credential_failure(ProviderResponseInvalid("403", provider="billit", status_code=403))
    assert is_credential_failure(ProviderResponseInvalid("401", provider="billit", status_code=401))


def test_a_missing_setting_alerts_at_once(engine, sim, clock):
    """Issue 9 #5: a missing setting is a permanent failure of the account, said at once."""
    service = make_service(engine, sim, clock, api_key=None)
    sim.billit.create_order(1001)
    with engine.begin() as conn:  # tracked while the setting was there
        repo.add_item(make_sessionmaker(engine)(bind=conn), provider="billit", account="default", kind="order",
                      ref="1001", interval_s=5, now=clock())
    poll_round(service)
    assert sorted(types(service)) == ["poll.failing", "provider.auth_failed"]


def test_a_missing_setting_is_our_error_not_the_providers(engine, sim, clock):
    """Issue 15 #6: our own ConfigurationError was recorded as the provider's ProviderResponseInvalid
    (poll outcome "failed"); it is ours: outcome "error", and a ProviderMisconfigured that is no
    ProviderResponseInvalid."""
    from worker.errors import ProviderMisconfigured, ProviderResponseInvalid

    assert not issubclass(ProviderMisconfigured, ProviderResponseInvalid)
    service = make_service(engine, sim, clock, api_key=None)
    sim.billit.create_order(1001)
    with engine.begin() as conn:
        repo.add_item(make_sessionmaker(engine)(bind=conn), provider="billit", account="default", kind="order",
                      ref="1001", interval_s=5, now=clock())
    errors, failed = polls("error"), polls("failed")
    poll_round(service)
    assert (polls("error"), polls("failed")) == (errors + 1, failed)
    (it,) = service.items()
    assert "billit account 'default' is not configured" in it.last_error and it.failing


# -- 12. fair deferral -------------------------------------------------------------------------

def test_a_deferred_item_keeps_its_place(engine, clock):
    """Issue 9 #12: a rate-limit deferral sent the item behind every item that came due after it."""
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        old = repo.add_item(s, provider="billit", account="default", kind="order", ref="1", interval_s=2,
                            now=clock()).id
    with sessions.begin() as s:
        (claim,) = repo.claim_due(s, now=clock(), lease_s=30, limit=10)
        repo.defer(s, claim, clock() + timedelta(seconds=5), now=clock())
    clock.advance(2)
    with sessions.begin() as s:
        repo.add_item(s, provider="billit", account="default", kind="order", ref="2", interval_s=2, now=clock())
    clock.advance(4)
    with sessions.begin() as s:
        (first,) = repo.claim_due(s, now=clock(), lease_s=30, limit=1)
        assert first.item_id == old
        assert s.get(Item, old).due_since is not None
