"""Requests and checks for the fake Amili ARM (batch status) API."""

from __future__ import annotations

from typing import Any

import requests

from simulator import Simulator
from tests.sim.common import TIMEOUT

STATIC = {"Authorization": "Bearer sim-arm-static-token"}
CLIENT_NO = "10001"
TTL = 120
BODY_FIELDS = [
    "batchUuid", "clientNo", "status", "created", "finished", "documentsTotal", "documentsProcessed",
    "documentsFailed", "results",
]  # fmt: skip


def get_batch(
    sim: Simulator, batch_uuid: str, headers: dict[str, str], client_no: str = CLIENT_NO, timeout: float = TIMEOUT
) -> requests.Response:
    return requests.get(f"{sim.url}/clients/{client_no}/batches/{batch_uuid}", headers=headers, timeout=timeout)


def batch_at(sim: Simulator, batch_uuid: str, headers: dict[str, str], status: int) -> dict[str, Any]:
    response = get_batch(sim, batch_uuid, headers)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def assert_arm_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["status", "message"]
    assert body["status"] == "ERROR" and isinstance(body["message"], str) and body["message"]


def next_stage(sim: Simulator) -> None:
    sim.clock.advance(sim.config.stage_seconds)
