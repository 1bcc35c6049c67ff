"""Fake provider HTTP APIs (Billit today) on loopback, for tests, demos and ``poller simulate``."""

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
