"""The fake Amili ADA (Sweden) API: faults and admin routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from simulator import Simulator
from tests.sim import ada, common

sim = common.sim_fixture(stage_seconds=ada.STAGE, options=ada.ada_options)


@pytest.mark.parametrize("kind", ["500", "503"])
def test_fault_5xx_is_html(sim: Simulator, kind: str) -> None:
    """ "500"/"503" faults answer that status with an HTML page."""
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    sim.faults.add("amili_ada", kind, count=1)
    common.assert_html(ada.get(sim, f"/cases/{case_id}", tok), int(kind))
    assert ada.get(sim, f"/cases/{case_id}", tok).status_code == 200


def test_fault_429_has_retry_after(sim: Simulator) -> None:
    """A "429" fault answers Eve's error body with Retry-After."""
    tok = ada.token(sim)
    sim.faults.add("amili_ada", "429", retry_after=7, count=1)
    response = ada.find(sim, tok, {"debt.invoice_number": "INV-2025-015"})
    ada.assert_eve_error(response, 429)
    assert response.headers["Retry-After"] == "7"


def _case(sim: Simulator) -> Callable[[float], requests.Response]:
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    return lambda timeout: ada.get(sim, f"/cases/{case_id}", tok, timeout=timeout)


test_fault_slow_trips_client_timeout, test_fault_malformed_and_html, test_fault_404_and_401_use_eve_bodies = (
    common.fault_tests("amili_ada", _case, 200, ada.assert_eve_error)
)


def test_faults_apply_after_auth_and_not_to_login(sim: Simulator) -> None:
    """An unscoped fault spares the login and bad-token calls, and hits the next authenticated call."""
    case_id = ada.fake(sim).create_case()
    sim.faults.add("amili_ada", "500", count=1)
    tok = ada.token(sim)
    assert ada.get(sim, f"/cases/{case_id}", "bad").status_code == 401
    assert ada.get(sim, f"/cases/{case_id}", tok).status_code == 500


def test_token_fault_fails_only_the_login(sim: Simulator) -> None:
    """A fault with ref "token" breaks the login endpoint and leaves /cases alone."""
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    sim.faults.add("amili_ada", "503", ref="token", count=1)
    assert ada.get(sim, f"/cases/{case_id}", tok).status_code == 200
    assert ada.login(sim, ada.fake(sim).make_login_jwt()).status_code == 503
    assert ada.login(sim, ada.fake(sim).make_login_jwt()).status_code == 200


def test_fault_scoped_to_invoice_number_hits_either_lookup(sim: Simulator) -> None:
    """A fault scoped to an invoice number or case id hits both GET /cases/{id} and the where query."""
    first = ada.fake(sim).create_case()
    second = ada.fake(sim).create_case()
    tok = ada.token(sim)
    sim.faults.add("amili_ada", "500", ref="INV-2025-015")
    assert ada.get(sim, f"/cases/{first}", tok).status_code == 500
    assert ada.find(sim, tok, {"debt.invoice_number": "INV-2025-015"}).status_code == 500
    assert ada.get(sim, f"/cases/{second}", tok).status_code == 200
    sim.faults.clear("amili_ada")
    sim.faults.add("amili_ada", "404", ref=second)
    assert ada.find(sim, tok, {"debt.invoice_number": "INV-2025-016"}).status_code == 404
    assert ada.find(sim, tok, {"debt.invoice_number": "INV-2025-015"}).status_code == 200


def test_admin_create_list_stage_and_keys(sim: Simulator) -> None:
    """The admin routes create and list cases, jump a stage, and show the keys."""
    created = requests.post(
        f"{sim.url}/_sim/amili_ada/cases",
        json={"invoice_number": "INV-X-1", "scenario": "cancelled"},
        timeout=common.TIMEOUT,
    )
    assert created.status_code == 201
    case_id = created.json()["_id"]
    assert created.json() == {"_id": case_id, "invoice_number": "INV-X-1", "scenario": "cancelled"}
    auto = requests.post(f"{sim.url}/_sim/amili_ada/cases", json={}, timeout=common.TIMEOUT).json()
    assert auto["invoice_number"] == "INV-2025-015" and auto["scenario"] == "paid"
    staged = requests.post(f"{sim.url}/_sim/amili_ada/cases/{case_id}/stage", json={"stage": 2}, timeout=common.TIMEOUT)
    assert staged.json() == {"_id": case_id, "stage": 2}
    listed = requests.get(f"{sim.url}/_sim/amili_ada/cases", timeout=common.TIMEOUT).json()["cases"]
    assert [(c["_id"], c["stage"], c["final_stage"]) for c in listed] == [(case_id, 2, 2), (auto["_id"], 0, 4)]
    assert ada.case_at(sim, ada.token(sim), case_id)["closed"]["reason"] == "cancelled"
    keys = requests.get(f"{sim.url}/_sim/amili_ada/keys", timeout=common.TIMEOUT).json()
    assert keys["algorithm"] == "ES512" and keys["private_key_pem"] == ada.fake(sim).private_key_pem


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/_sim/amili_ada/cases", {"scenario": "lost"}),
        ("/_sim/amili_ada/cases", {"invoice_number": 15}),
        ("/_sim/amili_ada/cases", {"invoice_number": ""}),
        ("/_sim/amili_ada/cases", {"colour": "red"}),
        ("/_sim/amili_ada/cases", [1, 2]),
    ],
)
def test_admin_bad_input_is_400(sim: Simulator, path: str, payload: Any) -> None:
    """Invalid admin requests answer 400 with an error message."""
    common.assert_refused(f"{sim.url}{path}", payload)


def test_admin_duplicate_invoice_and_bad_stage(sim: Simulator) -> None:
    """A duplicate invoice number or an out-of-range stage answers 400; an unknown case 404."""
    case_id = ada.fake(sim).create_case("INV-DUP")
    dup = requests.post(f"{sim.url}/_sim/amili_ada/cases", json={"invoice_number": "INV-DUP"}, timeout=common.TIMEOUT)
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]
    bad = requests.post(f"{sim.url}/_sim/amili_ada/cases/{case_id}/stage", json={"stage": 9}, timeout=common.TIMEOUT)
    assert bad.status_code == 400
    missing = requests.post(f"{sim.url}/_sim/amili_ada/cases/nope/stage", json={"stage": 1}, timeout=common.TIMEOUT)
    assert missing.status_code == 404
