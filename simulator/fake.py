"""``FakeProvider``: what every fake provider shares, so each fake module holds only its API.

A fake keeps items (orders, cases, invoices, batches) that live through scripted *stages* on the
shared SimClock, one every ``stage_seconds``; an item's body is a pure function of the item and its
stage. The base holds that life (``stage_of``, ``set_stage``, ``next_change_at``), the request
skeleton (authenticate, take an armed fault, answer) and the ``/_sim/<name>/...`` admin routes
every fake has: list, create and stage per kind of item, and ``tokens/expire``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from simulator.clock import SimClock, born_for_stage, next_stage_at, stage_reached
from simulator.config import SimulatorConfig
from simulator.faults import Fault, FaultPlan, render_fault
from simulator.router import HttpError, Request, Response, Router, json_response


@dataclass
class Item:
    """An item with a life: its scenario, and the simulated instant it was at stage 0.

    Stage k starts at ``born + k * stage_seconds``; ``set_stage`` moves ``born``.
    """

    scenario: str
    born: float


class Bodies:
    """Renders a fake's items at a stage: a pure function of the item, the stage and the clock."""

    def __init__(self, clock: SimClock, stage_seconds: float) -> None:
        self.clock = clock
        self.stage_seconds = stage_seconds

    def moment(self, item: Item, stage: int) -> datetime:
        """The wall-clock instant ``item`` reached ``stage``."""
        return self.clock.wall(item.born + stage * self.stage_seconds)


ItemT = TypeVar("ItemT", bound=Item)

#: The fault ref that hits only list requests; ``list:<page>`` hits one page.
LIST_FAULT_REF = "list"

#: ``(lister, creator)`` of one kind of item for the admin routes: ``GET`` answers
#: ``{plural: lister()}``, ``POST`` is ``creator(request)``.
AdminItems = dict[str, tuple[Callable[[], list[dict[str, Any]]], Callable[[Request], Response]]]


class FakeProvider(Generic[ItemT]):
    """The shared skeleton of a fake provider; subclasses add their API and bodies."""

    #: The provider name: fault plans, stats labels and ``/_sim/<name>/`` use it.
    name: ClassVar[str]
    #: What the items are called in "does not exist" messages.
    noun: ClassVar[str] = "item"
    #: The field naming the item in the admin stage answer (``{"OrderID": 1001, "stage": 2}``).
    id_field: ClassVar[str] = "id"
    #: What ``describe_lines`` shows of each kind of item: plural -> (id key, detail keys...) of its entries.
    described: ClassVar[dict[str, tuple[str, ...]]]
    #: The provider's error body for a fault that borrows one: status -> ``error`` arguments.
    fault_errors: ClassVar[dict[int, tuple[Any, ...]]]

    def __init__(
        self,
        clock: SimClock,
        faults: FaultPlan,
        config: SimulatorConfig,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        if config.stage_seconds <= 0:
            raise ValueError(f"stage_seconds must be > 0, got {config.stage_seconds}")
        self.clock = clock
        self.faults = faults
        self.options: dict[str, Any] = config.options
        self.stage_seconds = float(config.stage_seconds)
        # Sleeps for "slow" faults; the server's version returns early on shutdown.
        self._wait = wait
        self._lock = threading.Lock()
        #: Told of each item created (with its first stage) or moved (simulator.pushes).
        self.on_change: Callable[[str, int | None], None] | None = None
        self._configure(config)

    # ---- what a fake defines ------------------------------------------------------

    def _configure(self, config: SimulatorConfig) -> None:
        """Read the fake's own options and seed its items (the last step of ``__init__``)."""

    def error(self, status: int, *args: Any) -> Response:
        """The provider's own error body with ``status``."""
        raise NotImplementedError

    def _lookup(self, item_id: Any) -> ItemT | None:
        """The item ``item_id`` names, or None; the caller holds the lock."""
        raise NotImplementedError

    def _final_stage(self, item: ItemT) -> int:
        """The stage after which ``item`` no longer changes."""
        raise NotImplementedError

    def _register_api(self, router: Router) -> None:
        """Add the provider's API routes."""
        raise NotImplementedError

    def _admin_items(self) -> AdminItems:
        """The admin list and create handlers per kind of item, by plural noun."""
        raise NotImplementedError

    def _describe_header(self) -> list[str]:
        """The first lines of ``describe_lines``: what the fake serves and how to authenticate."""
        raise NotImplementedError

    def env(self, base_url: str) -> dict[str, str]:
        """Environment variables that point the poller at this fake."""
        raise NotImplementedError

    def expire_tokens(self) -> int:
        """Expire every access token issued so far; return how many were live."""
        return 0

    @property
    def tokens_issued(self) -> int:
        """Access tokens issued so far (0 for a fake without a token endpoint)."""
        return 0

    # ---- item life ----------------------------------------------------------------

    def stage_of(self, item_id: Any) -> int:
        """The stage an item is at now."""
        return self._stage(self._get(item_id))

    def set_stage(self, item_id: Any, stage: int) -> None:
        """Jump an item to ``stage`` now; it keeps moving on from there."""
        item = self._get(item_id)
        born = born_for_stage(stage, self._final_stage(item), self.clock.now(), self.stage_seconds,
                              self._stage_what(item))
        with self._lock:
            item.born = born
        self._changed(item_id, None)

    def next_change_at(self, item_id: Any) -> float | None:
        """When an item next moves on (simulated seconds; None once final)."""
        item = self._get(item_id)
        return next_stage_at(item.born, self.clock.now(), self.stage_seconds, self._final_stage(item))

    def _stage_what(self, item: ItemT) -> str:
        """How a bad stage's error names the item's kind of life."""
        return f"scenario {item.scenario!r}"

    def _changed(self, item_id: Any, stage: int | None) -> None:
        if self.on_change is not None:
            self.on_change(str(item_id), stage)

    def _get(self, item_id: Any) -> ItemT:
        with self._lock:
            item = self._lookup(item_id)
        if item is None:
            raise KeyError(f"{self.noun} {item_id} does not exist")
        return item

    def _stage(self, item: ItemT, now: float | None = None) -> int:
        now = self.clock.now() if now is None else now
        return stage_reached(item.born, now, self.stage_seconds, self._final_stage(item))

    def _moment(self, item: ItemT, stage: int) -> datetime:
        """The wall-clock instant ``item`` reached ``stage``."""
        return self.clock.wall(item.born + stage * self.stage_seconds)

    def _staged(self, items: Callable[[], Iterable[ItemT]]) -> list[tuple[ItemT, int]]:
        """``items()`` (read under the lock) with their stages, all at one instant."""
        now = self.clock.now()
        with self._lock:
            # Copies, because set_stage moves an item's birth under this lock.
            snapshot = [replace(item) for item in items()]
        return [(item, self._stage(item, now)) for item in snapshot]

    # ---- requests -----------------------------------------------------------------

    def _serve(self, denied: Response | None, ref: str | None, answer: Callable[[], Response]) -> Response:
        """The refusal if any, else an armed fault for ``ref``, else ``answer()``."""
        if denied is not None:
            return denied
        return self._answer(self.faults.take(self.name, ref), answer)

    def _serve_list(self, denied: Response | None, page: object, answer: Callable[[], Response]) -> Response:
        """Like ``_serve`` for a list: a fault armed for ``list:<page>`` wins over one for ``list``.

        ``page`` is None when the request does not name a valid page (its answer will be a 400).
        """
        if denied is not None:
            return denied
        fault = None if page is None else self.faults.take_scoped(self.name, f"{LIST_FAULT_REF}:{page}")
        return self._answer(fault or self.faults.take(self.name, LIST_FAULT_REF), answer)

    def _answer(self, fault: Fault | None, answer: Callable[[], Response]) -> Response:
        """``answer()``, or what ``fault`` makes of it ("slow" answers late)."""
        if fault is not None:
            faulted = render_fault(fault, normal=answer, error=self._fault_error, wait=self._wait)
            if faulted is not None:
                return faulted
        return answer()

    def _fault_error(self, status: int) -> Response:
        return error_from(self.fault_errors, self.error)(status)

    # ---- admin routes -------------------------------------------------------------

    def register(self, router: Router) -> None:
        """Add the API routes and the ``/_sim/<name>/...`` admin routes."""
        self._register_api(router)
        for plural, (lister, creator) in self._admin_items().items():
            self._admin_route(router, "GET", plural, _lister(plural, lister))
            self._admin_route(router, "POST", plural, creator)
            self._admin_route(router, "POST", f"{plural}/{{item_id}}/stage", self._admin_set_stage)
        self._admin_route(router, "POST", "tokens/expire", self._admin_expire_tokens)

    def _admin_route(self, router: Router, method: str, path: str, handler: Callable[..., Response]) -> None:
        router.add(method, f"/_sim/{self.name}/{path}", handler, label="_sim")

    def _admin_key(self, item_id: str) -> Any:
        """The item id as the Python API takes it, from the admin path."""
        return item_id

    def _admin_set_stage(self, request: Request, item_id: str) -> Response:
        data = self._admin_fields(request, {"stage"})
        key = self._admin_key(item_id)
        try:
            self.set_stage(key, data.get("stage"))  # type: ignore[arg-type]
        except KeyError as exc:
            raise HttpError(404, str(exc.args[0])) from exc
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(200, {self.id_field: key, "stage": self.stage_of(key)})

    def _admin_expire_tokens(self, request: Request) -> Response:
        return json_response(200, {"expired": self.expire_tokens(), "tokens_issued": self.tokens_issued})

    def _seed(self, key: str, default: int = 2) -> int:
        """How many items to create at start (option ``key``)."""
        seed = self.options.get(key, default)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {seed!r}")
        return seed

    @staticmethod
    def _check_scenario(scenario: str, allowed: Iterable[str]) -> None:
        """Raise ValueError unless ``scenario`` is one of ``allowed``."""
        if scenario not in allowed:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(allowed)}")

    @staticmethod
    def _admin_fields(request: Request, allowed: set[str]) -> dict[str, Any]:
        """An admin request's JSON object; 400 naming any field not in ``allowed``."""
        data = request.json_object()
        unknown = set(data) - allowed
        if unknown:
            raise HttpError(
                400, f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
            )
        return data

    @staticmethod
    def _admin_text(data: dict[str, Any], key: str, default: str | None = None) -> Any:
        """``data[key]`` (or ``default``), which must be a string or absent; 400 otherwise."""
        value = data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise HttpError(400, f"{key} must be a string")
        return value

    @staticmethod
    def _try_create(create: Callable[..., Any], *args: Any) -> Any:
        """``create(*args)``, its ValueError answered as 400."""
        try:
            return create(*args)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc

    def _entry(self, ids: dict[str, Any], item: ItemT, stage: int, **fields: Any) -> dict[str, Any]:
        """One item of an admin list: its ids, scenario, stage and final stage, then ``fields``."""
        return {**ids, "scenario": item.scenario, "stage": stage, "final_stage": self._final_stage(item), **fields}

    def describe_lines(self) -> list[str]:
        """Human lines: the header, then every item of each kind, or how to add the first one."""
        header = self._describe_header()
        lines = list(header)
        for plural, (lister, _) in self._admin_items().items():
            id_key, *details = self.described[plural]
            lines += [
                f"  {info[id_key]}  scenario={info['scenario']}  stage {info['stage']}/{info['final_stage']}  "
                + "  ".join(f"{key}={info[key]}" for key in details)
                for info in lister()
            ]
        if len(lines) == len(header):
            plural = next(iter(self.described))
            lines.append(f"  (no {plural} yet; POST /_sim/{self.name}/{plural} to add one)")
        return lines


def _lister(plural: str, lister: Callable[[], list[dict[str, Any]]]) -> Callable[[Request], Response]:
    return lambda request: json_response(200, {plural: lister()})


def delegated(path: str, doc: str, *, settable: bool = False) -> Any:
    """A property for ``self.<owner>.<attr>`` (``path`` is ``"owner.attr"``), so a fake shows a part's state."""
    owner, attr = path.split(".")

    def get(self: object) -> Any:
        return getattr(getattr(self, owner), attr)

    def put(self: object, value: Any) -> None:
        setattr(getattr(self, owner), attr, value)

    return property(get, put if settable else None, doc=doc)


def error_from(table: dict[int, tuple[Any, ...]], error: Callable[..., Response]) -> Callable[[int], Response]:
    """``error(status, *table[status])``: a provider's own error body for a fault that borrows one."""
    return lambda status: error(status, *table[status])
