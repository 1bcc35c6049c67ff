"""The fake providers besides Billit, each in its own module.

Every module named here defines a class with ``name``, ``register(router)``,
``describe_lines()`` and ``env(base_url)`` (see ``simulator.router.Provider``) and a constructor
``(clock, faults, config, wait)``: ``config`` is the SimulatorConfig (``stage_seconds``,
``token_ttl_seconds``, ``options``), ``wait(seconds)`` sleeps but returns early on shutdown.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.clock import SimClock
    from simulator.faults import FaultPlan
    from simulator.router import Provider
    from simulator.server import SimulatorConfig

#: module name -> class name, in the order they are served and described.
EXTRA_PROVIDERS: dict[str, str] = {
    "amili_distribution": "AmiliDistributionProvider",
    "amili_collection": "AmiliCollectionProvider",
    "amili_ada": "AmiliAdaProvider",
    "amili_arm": "AmiliArmProvider",
}


def build_extra_providers(
    config: SimulatorConfig, clock: SimClock, faults: FaultPlan, wait: Callable[[float], Any]
) -> list[Provider]:
    """Instantiate every extra provider whose module exists."""
    built = []
    for module_name, class_name in EXTRA_PROVIDERS.items():
        try:
            module = importlib.import_module(f"simulator.{module_name}")
        except ModuleNotFoundError as err:
            if err.name == f"simulator.{module_name}":
                continue  # not written yet
            raise
        built.append(getattr(module, class_name)(clock, faults, config, wait))
    return built
