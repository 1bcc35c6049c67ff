"""Requests and checks for the fake Billit API (orders, the order list, OAuth2)."""

from __future__ import annotations

import re
from typing import Any

import requests

from simulator import Simulator
from tests.sim.common import TIMEOUT

AUTH = {"ApiKey": "sim-billit-key", "PartyID": "1234"}
BILLIT_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?$")
#: Credentials Billit refuses, each with its test id: the item route and the list answer them alike.
BAD_CREDENTIALS = {
    "wrong-apikey": {"ApiKey": "wrong", "PartyID": "1234"},
    "missing-partyid": {"ApiKey": "sim-billit-key"},
    "wrong-partyid": {"ApiKey": "sim-billit-key", "PartyID": "9999"},
    "missing-apikey": {"PartyID": "1234"},
    "bearer": {"Authorization": "Bearer not-a-token", "PartyID": "1234"},
}


def get_order(
    sim: Simulator, order_id: int | str, headers: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> requests.Response:
    return requests.get(
        f"{sim.url}/v1/orders/{order_id}", headers=AUTH if headers is None else headers, timeout=timeout
    )


def order_at_next_stage(sim: Simulator, order_id: int) -> dict[str, Any]:
    sim.clock.advance(sim.config.stage_seconds)
    response = get_order(sim, order_id)
    assert response.status_code == 200
    return response.json()


def assert_billit_error(response: requests.Response, status: int, code: str) -> str:
    """Billit's ``{"errors": [{"Code", "Description"}]}`` with ``status``; returns the Description."""
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["errors"]
    assert len(body["errors"]) == 1
    assert body["errors"][0]["Code"] == code
    description = body["errors"][0]["Description"]
    assert isinstance(description, str) and description
    return description
