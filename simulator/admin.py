"""The ``/_sim/...`` control API: clock, faults, stats. JSON in and out, no auth.

Provider-specific admin routes (e.g. ``/_sim/billit/orders``) live with their
provider; these are the ones shared by all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from simulator.clock import SimClock
from simulator.faults import FaultPlan
from simulator.router import HttpError, Request, Response, Router, json_response


class SimulatorState(Protocol):
    """What the admin routes read and steer (``simulator.server.Simulator`` is one)."""

    clock: SimClock
    faults: FaultPlan

    @property
    def providers(self) -> Mapping[str, object]:
        """The fakes by name."""

    def stats(self) -> dict[str, Any]:
        """Request counts and connections."""

_FAULT_FIELDS = ("provider", "kind", "count", "retry_after", "delay", "ref", "drop", "set")


def register_admin_routes(router: Router, sim: SimulatorState) -> None:
    """Add the shared admin routes for ``sim`` to ``router``."""

    def health(request: Request) -> Response:
        return json_response(
            200, {"status": "ok", "providers": sorted(sim.providers), "now": sim.clock.now()}
        )

    def clock(request: Request) -> Response:
        data = request.json_object()
        unknown = set(data) - {"advance", "speed"}
        if unknown:
            raise HttpError(400, f"unknown field(s): {', '.join(sorted(unknown))}; allowed: advance, speed")
        if not data:
            raise HttpError(400, 'give "advance" (seconds) and/or "speed"')
        advance = _number(data, "advance")
        speed = _number(data, "speed")
        if advance is not None and advance < 0:
            raise HttpError(400, f"advance must be >= 0, got {advance}")
        if speed is not None and speed < 0:
            raise HttpError(400, f"speed must be >= 0, got {speed}")
        # Speed first so a combined request means "jump, then run at this rate".
        if speed is not None:
            sim.clock.set_speed(speed)
        if advance is not None:
            sim.clock.advance(advance)
        return json_response(200, {"now": sim.clock.now(), "speed": sim.clock.speed})

    def list_faults(request: Request) -> Response:
        return json_response(200, {"faults": sim.faults.active(request.query_one("provider"))})

    def add_fault(request: Request) -> Response:
        data = request.json_object()
        unknown = set(data) - set(_FAULT_FIELDS)
        if unknown:
            raise HttpError(
                400, f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(_FAULT_FIELDS)}"
            )
        for required in ("provider", "kind"):
            if required not in data:
                raise HttpError(400, f'"{required}" is required')
        if data["provider"] not in sim.providers:
            raise HttpError(
                400, f"unknown provider {data['provider']!r}; known: {', '.join(sorted(sim.providers))}"
            )
        kwargs: dict[str, Any] = dict(data)
        if isinstance(kwargs.get("ref"), int) and not isinstance(kwargs.get("ref"), bool):
            kwargs["ref"] = str(kwargs["ref"])
        try:
            fault = sim.faults.add(**kwargs)
        except (TypeError, ValueError) as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(201, fault)

    def clear_faults(request: Request) -> Response:
        provider = request.query_one("provider")
        if provider is not None and provider not in sim.providers:
            raise HttpError(400, f"unknown provider {provider!r}; known: {', '.join(sorted(sim.providers))}")
        return json_response(200, {"cleared": sim.faults.clear(provider)})

    def stats(request: Request) -> Response:
        return json_response(200, sim.stats())

    router.add("GET", "/_sim/health", health, label="_sim")
    router.add("POST", "/_sim/clock", clock, label="_sim")
    router.add("GET", "/_sim/faults", list_faults, label="_sim")
    router.add("POST", "/_sim/faults", add_fault, label="_sim")
    router.add("DELETE", "/_sim/faults", clear_faults, label="_sim")
    router.add("GET", "/_sim/stats", stats, label="_sim")


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HttpError(400, f"{key} must be a number, got {value!r}")
    return float(value)
