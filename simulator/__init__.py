"""Fake provider HTTP APIs on loopback (Billit, Amili Norway collection and distribution, Amili Sweden,
Amili ARM), for tests, demos and ``poller simulate``: paths, auth, lists, pushes and faults as the
providers document them."""

from __future__ import annotations

from simulator.billit import BillitProvider
from simulator.clock import SimClock
from simulator.faults import FAULT_KINDS, Fault, FaultPlan
from simulator.server import Simulator, SimulatorConfig

__all__ = [
    "FAULT_KINDS",
    "BillitProvider",
    "Fault",
    "FaultPlan",
    "SimClock",
    "Simulator",
    "SimulatorConfig",
]
