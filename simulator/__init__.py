"""Fake provider HTTP APIs on loopback (Billit, Amili Norway collection and distribution, Amili Sweden,
Amili ARM), for tests, demos and ``poller simulate`` (the one way to run it on its own): paths, auth,
lists, pushes and faults as the providers document them.

Each fake (``FakeBillit``, ``FakeAmiliAda``, ...) is a ``simulator.fake.FakeProvider``; the
``Simulator`` in ``simulator.server`` serves them all, configured by ``SimulatorConfig``.
"""

from __future__ import annotations

from simulator.clock import SimClock
from simulator.config import SimulatorConfig
from simulator.faults import FAULT_KINDS, Fault, FaultPlan
from simulator.server import FAKES, Simulator

__all__ = [
    "FAKES",
    "FAULT_KINDS",
    "Fault",
    "FaultPlan",
    "SimClock",
    "Simulator",
    "SimulatorConfig",
]
