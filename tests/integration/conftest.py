"""Fixtures shared by the integration modules."""

from __future__ import annotations

import random
from datetime import UTC

import pytest

from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import ProviderSet
from worker.sweeps import Sweeper

#: Seconds between the `sweeper` fixture's sweeps.
SWEEP_INTERVAL_S = 10.0


@pytest.fixture
def sweeper(stack, sim, clock):
    """A Sweeper for Billit's default account every SWEEP_INTERVAL_S, on the stack's database and
    clock (set to the simulator's wall time: a first sweep reads back a day on our clock)."""
    clock.now = sim.clock.wall().replace(tzinfo=UTC)
    providers = ProviderSet({"billit": BillitSettings(base_url=sim.url, api_key="sim-billit-key", party_id="1234")},
                            ProviderContext(http=HttpOptions(timeout_s=5), clock=clock))
    return Sweeper(stack.sessions, providers, {("billit", "default"): SWEEP_INTERVAL_S}, clock=clock,
                   rand=random.Random(3).random)
