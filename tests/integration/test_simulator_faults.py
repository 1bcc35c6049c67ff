"""The provider simulator's faults (on Billit's order route) and its shared admin API."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from simulator import FAULT_KINDS, Simulator
from tests.sim import billit, common

sim = common.sim_fixture()


def test_fault_500_is_an_html_page(sim: Simulator) -> None:
    """A "500" fault answers 500 with a small HTML error page."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500")
    response = billit.get_order(sim, order_id)
    common.assert_html(response, 500)
    assert "<html>" in response.text


def test_fault_503(sim: Simulator) -> None:
    """A "503" fault answers 503."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "503")
    assert billit.get_order(sim, order_id).status_code == 503


@pytest.mark.parametrize(("retry_after", "expected"), [(None, "1"), (7, "7")])
def test_fault_429_has_retry_after(sim: Simulator, retry_after: int | None, expected: str) -> None:
    """A "429" fault carries Retry-After in seconds (default 1)."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "429", retry_after=retry_after)
    response = billit.get_order(sim, order_id)
    billit.assert_billit_error(response, 429, "TooManyRequests")
    assert response.headers["Retry-After"] == expected


def test_fault_slow_trips_client_timeout(sim: Simulator) -> None:
    """A "slow" fault delays the answer past a short client timeout; without it the answer is normal."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "slow", delay=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sim.url}/v1/orders/{order_id}", headers=billit.AUTH, timeout=0.2)
    sim.faults.clear("billit")
    response = requests.get(f"{sim.url}/v1/orders/{order_id}", headers=billit.AUTH, timeout=5)  # load-proof
    assert response.status_code == 200 and response.json()["OrderID"] == order_id


def test_fault_slow_then_answers_normally(sim: Simulator) -> None:
    """A "slow" fault still ends in the normal answer for a patient client."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "slow", delay=0.05, count=1)
    response = billit.get_order(sim, order_id)
    assert response.status_code == 200 and response.json()["OrderID"] == order_id


def test_fault_malformed_is_invalid_json(sim: Simulator) -> None:
    """A "malformed" fault answers 200 application/json with a body that does not parse."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "malformed")
    common.assert_malformed(billit.get_order(sim, order_id))


def test_fault_html_is_200_text_html(sim: Simulator) -> None:
    """An "html" fault answers 200 with an HTML page instead of JSON."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "html")
    response = billit.get_order(sim, order_id)
    common.assert_html(response, 200)
    assert response.text.lstrip().startswith("<!DOCTYPE html>")


def test_fault_404_and_401_use_billit_bodies(sim: Simulator) -> None:
    """"404" and "401" faults answer with Billit's error bodies even for a valid order."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "404", count=1)
    sim.faults.add("billit", "401", count=1)
    billit.assert_billit_error(billit.get_order(sim, order_id), 404, "NotFound")
    billit.assert_billit_error(billit.get_order(sim, order_id), 401, "Unauthorized")
    assert billit.get_order(sim, order_id).status_code == 200


def test_faults_apply_after_auth(sim: Simulator) -> None:
    """A request with bad credentials gets 401 and does not consume a fault."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500", count=1)
    assert billit.get_order(sim, order_id, {"ApiKey": "nope", "PartyID": "1234"}).status_code == 401
    assert billit.get_order(sim, order_id).status_code == 500


def test_count_limited_fault_expires(sim: Simulator) -> None:
    """A fault with count=2 hits exactly two requests, then disappears."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "503", count=2)
    assert [billit.get_order(sim, order_id).status_code for _ in range(3)] == [503, 503, 200]
    assert sim.faults.active() == []


def test_unlimited_fault_lasts_until_cleared(sim: Simulator) -> None:
    """A fault without count keeps firing until cleared."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500")
    assert [billit.get_order(sim, order_id).status_code for _ in range(3)] == [500, 500, 500]
    assert sim.faults.clear() == 1
    assert billit.get_order(sim, order_id).status_code == 200


def test_ref_scoped_fault_hits_only_that_order(sim: Simulator) -> None:
    """A fault scoped to one OrderID leaves other orders alone."""
    first = sim.billit.create_order()
    second = sim.billit.create_order()
    sim.faults.add("billit", "500", ref=str(second))
    assert billit.get_order(sim, first).status_code == 200
    assert billit.get_order(sim, second).status_code == 500
    assert billit.get_order(sim, first).status_code == 200


def test_fault_for_other_provider_does_not_hit_billit(sim: Simulator) -> None:
    """Faults armed for another provider name never touch Billit requests."""
    order_id = sim.billit.create_order()
    sim.faults.add("amili_se", "500")
    assert billit.get_order(sim, order_id).status_code == 200


def test_unknown_fault_kind_names_allowed_kinds(sim: Simulator) -> None:
    """Adding an unknown fault kind raises ValueError listing every allowed kind."""
    with pytest.raises(ValueError) as excinfo:
        sim.faults.add("billit", "teapot")
    for kind in FAULT_KINDS:
        assert kind in str(excinfo.value)


def test_admin_create_order_and_advance_clock(sim: Simulator) -> None:
    """Orders created and clock advanced over the admin API change what Billit answers."""
    created = requests.post(f"{sim.url}/_sim/billit/orders", json={"OrderID": 77, "scenario": "refused"},
                            timeout=common.TIMEOUT)
    assert created.status_code == 201 and created.json() == {"OrderID": 77}
    auto = requests.post(f"{sim.url}/_sim/billit/orders", json={}, timeout=common.TIMEOUT)
    assert auto.json() == {"OrderID": 1001}

    clock = requests.post(f"{sim.url}/_sim/clock", json={"advance": 20}, timeout=common.TIMEOUT)
    assert clock.status_code == 200 and clock.json()["now"] == 20
    assert billit.get_order(sim, 77).json()["CurrentDocumentDeliveryDetails"]["DocumentDeliveryStatus"] == "Error"

    listed = requests.get(f"{sim.url}/_sim/billit/orders", timeout=common.TIMEOUT).json()["orders"]
    assert [(o["id"], o["scenario"], o["stage"]) for o in listed] == [(77, "refused", 2), (1001, "paid", 2)]

    staged = requests.post(f"{sim.url}/_sim/billit/orders/1001/stage", json={"stage": 5}, timeout=common.TIMEOUT)
    assert staged.json() == {"OrderID": 1001, "stage": 5}
    assert billit.get_order(sim, 1001).json()["OrderStatus"] == "Paid"

    speed = requests.post(f"{sim.url}/_sim/clock", json={"speed": 0}, timeout=common.TIMEOUT)
    assert speed.json()["speed"] == 0


def test_admin_faults_add_list_and_clear(sim: Simulator) -> None:
    """Faults can be armed, listed and cleared over the admin API."""
    order_id = sim.billit.create_order()
    added = requests.post(f"{sim.url}/_sim/faults",
                          json={"provider": "billit", "kind": "429", "retry_after": 3, "ref": order_id},
                          timeout=common.TIMEOUT)
    assert added.status_code == 201
    assert added.json()["kind"] == "429" and added.json()["ref"] == str(order_id)
    assert len(requests.get(f"{sim.url}/_sim/faults", timeout=common.TIMEOUT).json()["faults"]) == 1
    assert billit.get_order(sim, order_id).headers["Retry-After"] == "3"

    cleared = requests.delete(f"{sim.url}/_sim/faults", params={"provider": "billit"}, timeout=common.TIMEOUT)
    assert cleared.json() == {"cleared": 1}
    assert billit.get_order(sim, order_id).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/_sim/faults", {"provider": "billit", "kind": "teapot"}),
        ("POST", "/_sim/faults", {"provider": "nobody", "kind": "500"}),
        ("POST", "/_sim/faults", {"provider": "billit", "kind": "500", "count": 0}),
        ("POST", "/_sim/faults", {"kind": "500"}),
        ("POST", "/_sim/faults", {"provider": "billit", "kind": "500", "colour": "red"}),
        ("POST", "/_sim/clock", {"advance": -5}),
        ("POST", "/_sim/clock", {"advance": "soon"}),
        ("POST", "/_sim/clock", {}),
        ("POST", "/_sim/billit/orders", {"scenario": "lost"}),
        ("POST", "/_sim/billit/orders", {"OrderID": "x"}),
        ("POST", "/_sim/billit/orders", [1, 2]),
    ],
)
def test_admin_bad_input_is_400(sim: Simulator, method: str, path: str, payload: Any) -> None:
    """Invalid admin requests answer 400 with an error message."""
    common.assert_refused(f"{sim.url}{path}", payload, method)


def test_admin_invalid_json_and_duplicate_order_400(sim: Simulator) -> None:
    """A body that is not JSON, or a duplicate OrderID, answers 400."""
    bad = requests.post(f"{sim.url}/_sim/clock", data=b"{nope", timeout=common.TIMEOUT)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    sim.billit.create_order(5)
    dup = requests.post(f"{sim.url}/_sim/billit/orders", json={"OrderID": 5}, timeout=common.TIMEOUT)
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]


def test_admin_stats_counts_requests(sim: Simulator) -> None:
    """/_sim/stats counts requests per provider and path."""
    order_id = sim.billit.create_order()
    billit.get_order(sim, order_id)
    billit.get_order(sim, order_id)
    stats = requests.get(f"{sim.url}/_sim/stats", timeout=common.TIMEOUT).json()
    assert stats["requests"]["billit"] == {"total": 2, "paths": {f"GET /v1/orders/{order_id}": 2}}
    assert stats["connections"] >= 3
