"""What every fake's tests need: a running simulator, client-credentials tokens, fault assertions."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorConfig

TIMEOUT = 5
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
#: The Identiverse clients of the Amili Norway fakes (``POST /token``).
COLLECTION_CLIENT = {"client_id": "sim-collection-client", "client_secret": "sim-collection-secret"}
ARM_CLIENT = {"client_id": "sim-arm-client", "client_secret": "sim-arm-secret"}
#: Seed no Amili Norway items, so each test sees only what it creates.
NO_AMILI_NO_SEED = {"amili_collection_seed": 0, "amili_arm_seed": 0}


@contextmanager
def running(**config: Any) -> Iterator[Simulator]:
    """A started simulator on a free port, frozen clock and no Billit orders unless ``config`` says otherwise."""
    config = {"port": 0, "speed": 0, "seed_orders": 0, **config}
    simulator = Simulator(SimulatorConfig(**config)).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def new_token(sim: Simulator, client: dict[str, str]) -> str:
    """A fresh access token of ``client`` from the shared ``POST /token``."""
    response = requests.post(f"{sim.url}/token", data={"grant_type": "client_credentials", **client}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    """``Authorization: Bearer <token>``."""
    return {"Authorization": f"Bearer {token}"}


def assert_html(response: requests.Response, status: int) -> None:
    """An HTML page with ``status`` (the "500", "503" and "html" faults)."""
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")


def assert_malformed(response: requests.Response) -> None:
    """200 application/json whose body does not parse (the "malformed" fault)."""
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


def assert_slow_then_normal(call: Callable[[float], requests.Response], status: int) -> None:
    """A one-use "slow" fault (0.5 s) trips a 0.2 s client timeout; the next call answers ``status`` in time."""
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(0.2)
    assert call(0.2).status_code == status


def sim_fixture(**config: Any) -> Any:
    """A ``sim`` fixture: a simulator started with ``config`` for each test (see ``running``).

    ``options`` may be a function of the test's ``tmp_path`` (for files a fake writes).
    """

    @pytest.fixture
    def sim(tmp_path: Path) -> Iterator[Simulator]:
        options = config.get("options", {})
        with running(**{**config, "options": options(tmp_path) if callable(options) else options}) as simulator:
            yield simulator

    return sim


def token_fixture(client: dict[str, str]) -> Any:
    """An ``auth`` fixture: bearer headers with a fresh token of ``client``."""

    @pytest.fixture
    def auth(sim: Simulator) -> dict[str, str]:
        return bearer(new_token(sim, client))

    return auth


def before_and_after_expiry(
    sim: Simulator, fake: Any, client: dict[str, str], ttl: float, call: Callable[[dict[str, str]], requests.Response]
) -> tuple[requests.Response, requests.Response]:
    """``call(headers)`` with a fresh token of ``client``, then again once ``fake``'s token service is ``ttl``
    real seconds later (its clock stays there)."""
    service = fake.token_service
    start = time.time()
    service.time_fn = lambda: start
    headers = bearer(new_token(sim, client))
    before = call(headers)
    service.time_fn = lambda: start + ttl
    return before, call(headers)
