"""Requests and checks for the fake Amili Distribution (Compello) pstatus API."""

from __future__ import annotations

import re
from typing import Any

import requests

from simulator import Simulator
from simulator.amili_distribution import FakeAmiliDistribution
from tests.sim.common import TIMEOUT

STAGE = 10.0
TOKEN = "sim-partner-token"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


# Seed 000's response shape, key for key and in order.
TOP_KEYS = ["ReceiptId", "Filename", "InvoiceData", "Received", "Status", "Transaction", "InvoiceLink"]
TRANSACTION_KEYS = [
    "TransactionRid", "LogTime", "DeliveryTime", "Status", "Company", "Channel", "RequestedChannel",
    "ActualChannel", "Direction", "InvoiceType", "InvoiceNumber", "Filename", "LogText", "InvoiceeName",
    "InvoiceDate", "DueDate", "Amount", "AmountExVat", "KID", "ChannelStatus", "ChannelUpdateTime",
    "CorrelationStatus",
]  # fmt: skip


def dist(sim: Simulator) -> FakeAmiliDistribution:
    provider: FakeAmiliDistribution = sim.amili_distribution
    return provider


def pstatus(
    sim: Simulator, body: Any = None, *, data: bytes | None = None, headers: dict[str, str] | None = None, **kw: Any
) -> requests.Response:
    return requests.post(
        f"{sim.url}/send/pstatus",
        json=body if data is None else None,
        data=data,
        headers=headers,
        timeout=kw.pop("timeout", TIMEOUT),
    )


def status_of(sim: Simulator, identifier: str) -> dict[str, Any]:
    response = pstatus(sim, {"Identifier": identifier})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_message(response: requests.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["Message"] and isinstance(body["Message"], str) and body["Message"]
    if message is not None:
        assert body["Message"] == message
