"""The fake Amili Distribution pstatus API: faults and admin routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from simulator import Simulator
from tests.sim import common, distribution

sim = common.sim_fixture(stage_seconds=distribution.STAGE, options={"amili_distribution_seed": 0})
token_sim = common.sim_fixture(
    stage_seconds=distribution.STAGE,
    options={"amili_distribution_seed": 0, "amili_distribution_token": distribution.TOKEN},
)


@pytest.mark.parametrize("kind", ["500", "503"])
def test_fault_5xx_is_html(sim: Simulator, kind: str) -> None:
    """ "500"/"503" faults answer that status with an HTML page, once."""
    identifier = distribution.dist(sim).create_invoice()
    sim.faults.add("amili_distribution", kind, count=1)
    common.assert_html(distribution.pstatus(sim, {"Identifier": identifier}), int(kind))
    assert distribution.pstatus(sim, {"Identifier": identifier}).status_code == 200


def test_fault_429_has_retry_after(sim: Simulator) -> None:
    """A "429" fault answers {"Message"} with Retry-After."""
    identifier = distribution.dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "429", count=1)
    response = distribution.pstatus(sim, {"Identifier": identifier})
    distribution.assert_message(response, 429)
    assert response.headers["Retry-After"] == "1"


def _invoice(sim: Simulator) -> Callable[[float], requests.Response]:
    identifier = distribution.dist(sim).create_invoice()
    return lambda timeout: distribution.pstatus(sim, {"Identifier": identifier}, timeout=timeout)


def _message(response: requests.Response, status: int) -> None:
    messages = {404: "Invoice not found", 401: "Authorization has been denied for this request."}
    distribution.assert_message(response, status, messages[status])


test_fault_slow_trips_client_timeout, test_fault_malformed_and_html, test_fault_404_and_401_use_message_bodies = (
    common.fault_tests("amili_distribution", _invoice, 200, _message)
)


def test_fault_scoped_to_one_invoice_hits_it_by_either_key(sim: Simulator) -> None:
    """A fault scoped to an invoice's number hits it when asked by Identifier too, and spares others."""
    first = distribution.dist(sim).create_invoice("INV-A", "9001")
    other = distribution.dist(sim).create_invoice("INV-B", "9002")
    sim.faults.add("amili_distribution", "503", ref="9001")
    assert distribution.pstatus(sim, {"Identifier": first}).status_code == 503
    assert distribution.pstatus(sim, {"Invoice": {"InvoiceNo": "9001"}}).status_code == 503
    assert distribution.pstatus(sim, {"Identifier": other}).status_code == 200


def test_admin_create_list_and_stage(sim: Simulator) -> None:
    """The admin routes create and list invoices and jump a stage."""
    created = requests.post(
        f"{sim.url}/_sim/amili_distribution/invoices",
        json={"Identifier": "X-1", "InvoiceNo": 42, "scenario": "handled"},
        timeout=common.TIMEOUT,
    )
    assert created.status_code == 201
    assert created.json() == {"Identifier": "X-1", "InvoiceNo": "42", "scenario": "handled"}
    auto = requests.post(f"{sim.url}/_sim/amili_distribution/invoices", json={}, timeout=common.TIMEOUT)
    assert auto.status_code == 201 and auto.json()["scenario"] == "ok"
    staged = requests.post(
        f"{sim.url}/_sim/amili_distribution/invoices/X-1/stage", json={"stage": 3}, timeout=common.TIMEOUT
    )
    assert staged.json() == {"Identifier": "X-1", "stage": 3}
    listed = requests.get(f"{sim.url}/_sim/amili_distribution/invoices", timeout=common.TIMEOUT).json()["invoices"]
    assert [(i["Identifier"], i["stage"], i["TransactionStatus"]) for i in listed] == [
        ("X-1", 3, "Handled"),
        (auto.json()["Identifier"], 0, None),
    ]
    assert distribution.status_of(sim, "X-1")["Transaction"]["Status"] == "Handled"


@pytest.mark.parametrize(
    "payload",
    [
        {"scenario": "lost"},
        {"Identifier": 5},
        {"identifier": ""},
        {"InvoiceNo": ["1"]},
        {"colour": "red"},
        [1, 2],
    ],
)
def test_admin_bad_input_is_400(sim: Simulator, payload: Any) -> None:
    """Invalid admin requests answer 400 with an error message."""
    common.assert_refused(f"{sim.url}/_sim/amili_distribution/invoices", payload)


def test_admin_duplicates_and_bad_stage(sim: Simulator) -> None:
    """A duplicate Identifier or InvoiceNo, or a bad stage, answers 400; an unknown invoice 404."""
    distribution.dist(sim).create_invoice("DUP", "100")
    url = f"{sim.url}/_sim/amili_distribution/invoices"
    for payload in ({"Identifier": "DUP"}, {"InvoiceNo": "100"}):
        response = requests.post(url, json=payload, timeout=common.TIMEOUT)
        assert response.status_code == 400 and "already exists" in response.json()["error"]
    assert requests.post(f"{url}/DUP/stage", json={"stage": 4}, timeout=common.TIMEOUT).status_code == 400
    assert requests.post(f"{url}/nope/stage", json={"stage": 1}, timeout=common.TIMEOUT).status_code == 404
