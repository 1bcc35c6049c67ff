"""The fake Amili Distribution pstatus API: faults and admin routes."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from simulator import Simulator
from tests.sim.common import TIMEOUT, assert_html, assert_malformed, assert_slow_then_normal, sim_fixture
from tests.sim.distribution import (
    STAGE,
    TOKEN,
    assert_message,
    dist,
    pstatus,
    status_of,
)

sim = sim_fixture(stage_seconds=STAGE, options={"amili_distribution_seed": 0})
token_sim = sim_fixture(stage_seconds=STAGE, options={"amili_distribution_seed": 0, "amili_distribution_token": TOKEN})


@pytest.mark.parametrize("kind", ["500", "503"])
def test_fault_5xx_is_html(sim: Simulator, kind: str) -> None:
    """ "500"/"503" faults answer that status with an HTML page, once."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", kind, count=1)
    assert_html(pstatus(sim, {"Identifier": identifier}), int(kind))
    assert pstatus(sim, {"Identifier": identifier}).status_code == 200


def test_fault_429_has_retry_after(sim: Simulator) -> None:
    """A "429" fault answers {"Message"} with Retry-After."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "429", count=1)
    response = pstatus(sim, {"Identifier": identifier})
    assert_message(response, 429)
    assert response.headers["Retry-After"] == "1"


def test_fault_slow_trips_client_timeout(sim: Simulator) -> None:
    """A "slow" fault delays the answer past a short client timeout."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "slow", delay=0.5, count=1)
    assert_slow_then_normal(lambda timeout: pstatus(sim, {"Identifier": identifier}, timeout=timeout), 200)


def test_fault_malformed_and_html(sim: Simulator) -> None:
    """ "malformed" gives 200 JSON that does not parse; "html" gives a 200 HTML page."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "malformed", count=1)
    assert_malformed(pstatus(sim, {"Identifier": identifier}))
    sim.faults.add("amili_distribution", "html", count=1)
    assert_html(pstatus(sim, {"Identifier": identifier}), 200)


def test_fault_404_and_401_use_message_bodies(sim: Simulator) -> None:
    """ "404" and "401" faults answer {"Message"} bodies even for a known invoice without auth."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "404", count=1)
    sim.faults.add("amili_distribution", "401", count=1)
    assert_message(pstatus(sim, {"Identifier": identifier}), 404, "Invoice not found")
    assert_message(pstatus(sim, {"Identifier": identifier}), 401, "Authorization has been denied for this request.")
    assert pstatus(sim, {"Identifier": identifier}).status_code == 200


def test_fault_scoped_to_one_invoice_hits_it_by_either_key(sim: Simulator) -> None:
    """A fault scoped to an invoice's number hits it when asked by Identifier too, and spares others."""
    first = dist(sim).create_invoice("INV-A", "9001")
    other = dist(sim).create_invoice("INV-B", "9002")
    sim.faults.add("amili_distribution", "503", ref="9001")
    assert pstatus(sim, {"Identifier": first}).status_code == 503
    assert pstatus(sim, {"Invoice": {"InvoiceNo": "9001"}}).status_code == 503
    assert pstatus(sim, {"Identifier": other}).status_code == 200


def test_admin_create_list_and_stage(sim: Simulator) -> None:
    """The admin routes create and list invoices and jump a stage."""
    created = requests.post(
        f"{sim.url}/_sim/amili_distribution/invoices",
        json={"Identifier": "X-1", "InvoiceNo": 42, "scenario": "handled"},
        timeout=TIMEOUT,
    )
    assert created.status_code == 201
    assert created.json() == {"Identifier": "X-1", "InvoiceNo": "42", "scenario": "handled"}
    auto = requests.post(f"{sim.url}/_sim/amili_distribution/invoices", json={}, timeout=TIMEOUT)
    assert auto.status_code == 201 and auto.json()["scenario"] == "ok"
    staged = requests.post(f"{sim.url}/_sim/amili_distribution/invoices/X-1/stage", json={"stage": 3}, timeout=TIMEOUT)
    assert staged.json() == {"Identifier": "X-1", "stage": 3}
    listed = requests.get(f"{sim.url}/_sim/amili_distribution/invoices", timeout=TIMEOUT).json()["invoices"]
    assert [(i["Identifier"], i["stage"], i["TransactionStatus"]) for i in listed] == [
        ("X-1", 3, "Handled"),
        (auto.json()["Identifier"], 0, None),
    ]
    assert status_of(sim, "X-1")["Transaction"]["Status"] == "Handled"


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
    response = requests.post(f"{sim.url}/_sim/amili_distribution/invoices", json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]


def test_admin_duplicates_and_bad_stage(sim: Simulator) -> None:
    """A duplicate Identifier or InvoiceNo, or a bad stage, answers 400; an unknown invoice 404."""
    dist(sim).create_invoice("DUP", "100")
    url = f"{sim.url}/_sim/amili_distribution/invoices"
    for payload in ({"Identifier": "DUP"}, {"InvoiceNo": "100"}):
        response = requests.post(url, json=payload, timeout=TIMEOUT)
        assert response.status_code == 400 and "already exists" in response.json()["error"]
    assert requests.post(f"{url}/DUP/stage", json={"stage": 4}, timeout=TIMEOUT).status_code == 400
    assert requests.post(f"{url}/nope/stage", json={"stage": 1}, timeout=TIMEOUT).status_code == 404
