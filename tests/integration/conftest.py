"""Fixtures shared by the integration modules."""

from __future__ import annotations

import random
from datetime import UTC

import pytest
from sqlalchemy import select

from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.service import PollerService
from worker.store.models import Event, Sweep
from worker.sweeps import Sweeper

#: Seconds between the `sweeper` fixture's sweeps.
SWEEP_INTERVAL_S = 10.0


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


def poll_due(poller: PollerService) -> int:
    """Claim and poll everything due now; how many were claimed."""
    return poller.dispatch_due(poller.poll_claims, lease_s=30, limit=1000, chunk_size=200)


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
