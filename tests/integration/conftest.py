"""Fixtures shared by the integration modules."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from tests.conftest import Clock
from worker.policy import PollPolicy
from worker.polls import PollReport
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store.credentials import DbCredentialStore
from worker.store.db import make_sessionmaker
from worker.store.models import Event, Sweep
from worker.store.repo import Claim
from worker.sweeps import Sweeper

#: Seconds between the `sweeper` fixture's sweeps.
SWEEP_INTERVAL_S = 10.0
#: Fast backoff for `provider_service`: a failure is retried within seconds of the test's clock.
PROVIDER_POLICY = PollPolicy(backoff_base_s=1, backoff_max_s=5, failing_after=3)


@pytest.fixture
def sweeper(stack, sim, clock):
    """A Sweeper for Billit's default account every SWEEP_INTERVAL_S, on the stack's database and
    clock (set to the simulator's wall time: a first sweep reads back a day on our clock), storing
    listed orders through the stack's poller as the daemon's sweeper does."""
    clock.now = sim.clock.wall().replace(tzinfo=UTC)
    providers = ProviderSet({"billit": BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234")},
                            ProviderContext(http=HttpOptions(timeout_s=5), clock=clock))
    return Sweeper(stack.sessions, providers, {("billit", "default"): SWEEP_INTERVAL_S}, clock=clock,
                   rand=random.Random(3).random, store=stack.poller.store_listed)


def poller_and_sweeper(stack, clock, provider: str, settings) -> tuple[PollerService, Sweeper]:
    """A poller and a sweeper of ``provider``'s default account (``settings``) on the stack's
    database and clock, sweeping every SWEEP_INTERVAL_S."""
    providers = ProviderSet({provider: settings}, ProviderContext(http=HttpOptions(timeout_s=5), clock=clock))
    poller = PollerService(stack.sessions, providers, PollPolicy(), clock=clock, rng=random.Random(1))
    sweeper = Sweeper(stack.sessions, providers, {(provider, "default"): SWEEP_INTERVAL_S}, clock=clock,
                      rand=random.Random(3).random, store=poller.store_listed)
    return poller, sweeper


def next_sweep(sweeper: Sweeper, clock: Clock):
    """The next sweep: the clock moved on one interval, so it is due."""
    clock.advance(SWEEP_INTERVAL_S)
    results = sweeper.run_due()
    assert len(results) == 1, results
    return results[0]


#: How late the provider answers a late poll: the window in which a test's push or sweep must land
#: (0.5 s was too short on a loaded 2-core machine: the poll finished first).
LATE_S = 2.0


@contextmanager
def late_poll(poller: PollerService, sim, clock: Clock, provider: str, ref: str) -> Iterator[list[PollReport]]:
    """An hour on, the due items claimed and polled on a thread while ``provider`` answers ``ref``
    late (a one-use "slow" fault): the block runs once the poll's request is taken, so what it
    changes lands while the old answer is on the way. Yields the poll's reports, there once the
    block ends (it waits for the poll)."""
    claims: list[list[Claim]] = []
    clock.advance(3600)
    poller.dispatch_due(claims.append, lease_s=30, limit=100, chunk_size=100)
    sim.faults.add(provider, "slow", delay=LATE_S, ref=ref, count=1)
    reports: list[PollReport] = []
    under_way = threading.Thread(target=lambda: reports.append(poller.poll_claims(claims[0])))
    under_way.start()
    deadline = time.monotonic() + 10
    while sim.faults.active(provider) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    try:
        yield reports
    finally:
        under_way.join()


def poll_due(poller: PollerService) -> int:
    """Claim and poll everything due now; how many were claimed."""
    return poller.dispatch_due(poller.poll_claims, lease_s=30, limit=1000, chunk_size=200)


def first_poll_error(service: PollerService, provider: str, ref: str) -> str:
    """Track ``provider``'s ``ref`` and poll it once: the error that poll recorded."""
    service.track(provider, ref, interval_s=5)
    service.dispatch_due(service.poll_claims, lease_s=30, limit=1000, chunk_size=10)
    (item,) = service.items()
    assert item.last_error is not None, "the poll recorded no error"
    return item.last_error


def changed_items(stack) -> list[int]:
    """The item of every status.changed event, in item order."""
    with stack.sessions.begin() as s:
        return list(s.scalars(select(Event.item_id).where(Event.type == "status.changed").order_by(Event.item_id)))


def sweep_row(stack, provider: str) -> Sweep:
    """The default account's sweep row of ``provider``, detached."""
    with stack.sessions.begin() as s:
        row = s.get(Sweep, (provider, "default"))
        s.expunge(row)
        return row


# -- providers with their auth flows (test_providers, test_secrets_at_rest) -------------------

@pytest.fixture
def wall() -> Clock:
    """A clock at the real wall time: the simulator's token services stamp expiry in wall time."""
    return Clock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def oauth_sim(wall):
    """A simulator whose Billit wants OAuth2 with rotating refresh tokens, its wall clock ours."""
    from simulator.server import Simulator, SimulatorConfig

    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, options={"billit_oauth": True})).start() as s:
        s.billit.oauth.wall_time = lambda: wall().timestamp()
        yield s


def provider_service(engine, wall, settings: dict, *, seed: int = 1) -> PollerService:
    """A poller of ``settings`` on ``engine``, its rotating credentials stored in the database."""
    sessions = make_sessionmaker(engine)
    ctx = ProviderContext(http=HttpOptions(timeout_s=2), clock=wall, credentials=DbCredentialStore(sessions))
    return PollerService(sessions, ProviderSet(settings, ctx), PROVIDER_POLICY, clock=wall, rng=random.Random(seed))


def billit_oauth_settings(sim) -> dict:
    """Billit's default account over OAuth2 against ``sim``, seeded with the simulator's first refresh token."""
    return {"billit": BillitSettings(base_url=sim.url, party_id="1234", client_id="sim-billit-client",
                                     client_secret=SecretStr("sim-billit-secret"),
                                     refresh_token=SecretStr("sim-billit-refresh-0"))}
