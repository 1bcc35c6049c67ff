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


def client_env(provider: str, url: str, client: dict[str, str]) -> dict[str, str]:
    """The ``POLLER_<PROVIDER>__*`` variables that point the poller at a fake on ``url`` whose
    token service (``POST {url}/token``) knows ``client``."""
    prefix = f"POLLER_{provider.upper()}__"
    return {
        f"{prefix}BASE_URL": url,
        f"{prefix}AUTH_URL": url,
        f"{prefix}CLIENT_ID": client["client_id"],
        f"{prefix}CLIENT_SECRET": client["client_secret"],
    }


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


def assert_refused(url: str, payload: Any, method: str = "POST") -> None:
    """An admin request with JSON ``payload`` answers 400 with an error message."""
    response = requests.request(method, url, json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]


#: What a fake's fault tests call: ``target(sim)`` makes an item the fake answers and returns a
#: call that fetches it with a client timeout, ``call(timeout)``.
Target = Callable[[Simulator], Callable[[float], requests.Response]]


def fault_tests(
    provider: str, target: Target, status: int, check_error: Callable[[requests.Response, int], None]
) -> tuple[Callable[[Simulator], None], ...]:
    """The fault tests every fake of ``provider`` passes, as ``test_fault_slow_trips_client_timeout``,
    ``test_fault_malformed_and_html`` and ``test_fault_404_and_401_use_<provider's>_bodies``:
    a fetch of ``target`` answers ``status`` when no fault is armed, and ``check_error(response,
    code)`` holds for the provider's own error bodies."""

    def slow(sim: Simulator) -> None:
        """A one-use "slow" fault (0.5 s) trips a 0.2 s client timeout; the next call answers (given
        5 s: under a full suite's load on two cores an answer took longer than 0.2 s)."""
        call = target(sim)
        sim.faults.add(provider, "slow", delay=0.5, count=1)
        with pytest.raises(requests.exceptions.ReadTimeout):
            call(0.2)
        assert call(5.0).status_code == status

    def malformed_and_html(sim: Simulator) -> None:
        """ "malformed" answers 200 JSON that does not parse; "html" answers a 200 HTML page."""
        call = target(sim)
        sim.faults.add(provider, "malformed", count=1)
        sim.faults.add(provider, "html", count=1)
        assert_malformed(call(TIMEOUT))
        assert_html(call(TIMEOUT), 200)

    def not_found_and_unauthorized(sim: Simulator) -> None:
        """ "404" and "401" faults answer the provider's own error bodies even for a valid request."""
        call = target(sim)
        sim.faults.add(provider, "404", count=1)
        sim.faults.add(provider, "401", count=1)
        check_error(call(TIMEOUT), 404)
        check_error(call(TIMEOUT), 401)
        assert call(TIMEOUT).status_code == status

    return slow, malformed_and_html, not_found_and_unauthorized


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
