"""The fake Amili ARM batch-status API: faults, admin routes, seeding and env."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from simulator import Simulator
from tests.sim import arm, common

sim = common.sim_fixture(token_ttl_seconds=arm.TTL, options=common.NO_AMILI_NO_SEED)
auth = common.token_fixture(common.ARM_CLIENT)


def test_fault_500_503_429(sim: Simulator, auth: dict[str, str]) -> None:
    """ "500" is an HTML page, "503" plain, "429" ARM's error body with Retry-After."""
    batch_uuid = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "500", count=1)
    sim.faults.add("amili_arm", "503", count=1)
    sim.faults.add("amili_arm", "429", count=1, retry_after=6)
    common.assert_html(arm.get_batch(sim, batch_uuid, auth), 500)
    assert arm.get_batch(sim, batch_uuid, auth).status_code == 503
    limited = arm.get_batch(sim, batch_uuid, auth)
    arm.assert_arm_error(limited, 429)
    assert limited.headers["Retry-After"] == "6"
    assert arm.get_batch(sim, batch_uuid, auth).status_code == 202


def _batch(sim: Simulator) -> Callable[[float], requests.Response]:
    batch_uuid = sim.amili_arm.create_batch()
    headers = common.bearer(common.new_token(sim, common.ARM_CLIENT))
    return lambda timeout: arm.get_batch(sim, batch_uuid, headers, timeout=timeout)


test_fault_slow_trips_client_timeout, test_fault_malformed_and_html, test_fault_404_and_401_use_arm_bodies = (
    common.fault_tests("amili_arm", _batch, 202, arm.assert_arm_error)
)


def test_faults_after_auth_and_scoped_by_batch(sim: Simulator, auth: dict[str, str]) -> None:
    """Rejected requests do not consume faults; a fault scoped to one batch leaves others alone."""
    first = sim.amili_arm.create_batch()
    second = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "500", count=1, ref=second)
    assert arm.get_batch(sim, second, {}).status_code == 401
    assert arm.get_batch(sim, second, {**auth, "Accept": "text/xml"}).status_code == 406
    assert arm.get_batch(sim, second, auth, client_no="1").status_code == 403
    assert arm.get_batch(sim, first, auth).status_code == 202
    assert arm.get_batch(sim, second, auth).status_code == 500


def test_token_fault_hits_only_arm_token_calls(sim: Simulator) -> None:
    """A fault with ref "token" for amili_arm fails ARM token calls but not collection ones or the API."""
    batch_uuid = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "500", count=1, ref="token")
    collection = requests.post(
        f"{sim.url}/token",
        data={"grant_type": "client_credentials", **common.COLLECTION_CLIENT},
        timeout=common.TIMEOUT,
    )
    assert collection.status_code == 200
    arm_token = requests.post(
        f"{sim.url}/token", data={"grant_type": "client_credentials", **common.ARM_CLIENT}, timeout=common.TIMEOUT
    )
    assert arm_token.status_code == 500 and arm_token.headers["Content-Type"].startswith("text/html")
    assert arm.get_batch(sim, batch_uuid, arm.STATIC).status_code == 202
    assert arm.get_batch(sim, batch_uuid, common.bearer(common.new_token(sim, common.ARM_CLIENT))).status_code == 202


def test_admin_create_list_and_stage(sim: Simulator, auth: dict[str, str]) -> None:
    """Batches created, listed and staged over the admin API change what ARM answers."""
    base = f"{sim.url}/_sim/amili_arm/batches"
    created = requests.post(
        base, json={"batchUuid": "b-1", "scenario": "partial", "documents": 6}, timeout=common.TIMEOUT
    )
    assert created.status_code == 201 and created.json() == {"batchUuid": "b-1"}
    auto = requests.post(base, json={}, timeout=common.TIMEOUT)
    assert auto.status_code == 201 and common.UUID.match(auto.json()["batchUuid"])
    by_id = requests.post(base, json={"id": "b-2"}, timeout=common.TIMEOUT)
    assert by_id.json() == {"batchUuid": "b-2"}

    staged = requests.post(f"{base}/b-1/stage", json={"stage": 2}, timeout=common.TIMEOUT)
    assert staged.json() == {"batchUuid": "b-1", "stage": 2}
    done = arm.batch_at(sim, "b-1", auth, 206)
    assert (done["documentsProcessed"], done["documentsFailed"]) == (4, 2)
    listed = requests.get(base, timeout=common.TIMEOUT).json()["batches"]
    assert [(b["id"], b["stage"], b["http_status"], b["status"]) for b in listed] == [
        ("b-1", 2, 206, "PARTIALLY_PROCESSED"),
        (auto.json()["batchUuid"], 0, 202, "PROCESSING"),
        ("b-2", 0, 202, "PROCESSING"),
    ]


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("", {"scenario": "success"}),
        ("", {"documents": 0}),
        ("", {"documents": "3"}),
        ("", {"documents": True}),
        ("", {"batchUuid": 7}),
        ("", {"id": "a", "batchUuid": "b"}),
        ("", {"colour": "red"}),
        ("", [1]),
        ("/seeded/stage", {"stage": 3}),
        ("/seeded/stage", {}),
    ],
)
def test_admin_bad_input_is_400(sim: Simulator, path: str, payload: Any) -> None:
    """Invalid admin requests answer 400 with an error message."""
    sim.amili_arm.create_batch("seeded")
    common.assert_refused(f"{sim.url}/_sim/amili_arm/batches{path}", payload)


def test_admin_stage_unknown_batch_404(sim: Simulator) -> None:
    """Staging an unknown batch answers 404."""
    response = requests.post(f"{sim.url}/_sim/amili_arm/batches/nope/stage", json={"stage": 1}, timeout=common.TIMEOUT)
    assert response.status_code == 404 and response.json()["error"]


def test_seed_env_and_describe() -> None:
    """Two batches ("ok" and "partial") are seeded by default; env() points the poller here."""
    with common.running() as seeded:
        assert [b["scenario"] for b in seeded.amili_arm.batches()] == ["ok", "partial"]
        assert seeded.amili_arm.env(seeded.url) == {
            **common.client_env("amili_arm", seeded.url, common.ARM_CLIENT),
            "POLLER_AMILI_ARM__CLIENT_NO": arm.CLIENT_NO,
        }
        text = seeded.describe()
        assert f"export POLLER_AMILI_ARM__CLIENT_NO={arm.CLIENT_NO}" in text
        assert seeded.amili_arm.batches()[1]["id"] in text


def test_options_override_client_no_and_static_token() -> None:
    """Client number, credentials and the static token come from options; "" disables the static token."""
    options = {
        "amili_arm_seed": 1,
        "amili_arm_client_no": "2218",
        "amili_arm_client_id": "arm-id",
        "amili_arm_client_secret": "arm-secret",
        "amili_arm_static_token": "",
    }
    with common.running(options=options) as custom:
        [batch] = custom.amili_arm.batches()
        arm.assert_arm_error(arm.get_batch(custom, batch["id"], arm.STATIC, client_no="2218"), 401)
        arm.assert_arm_error(arm.get_batch(custom, batch["id"], {"Authorization": "Bearer "}, client_no="2218"), 401)
        token = common.new_token(custom, {"client_id": "arm-id", "client_secret": "arm-secret"})
        response = arm.get_batch(custom, batch["id"], common.bearer(token), client_no="2218")
        assert response.status_code == 202 and response.json()["clientNo"] == 2218
        arm.assert_arm_error(arm.get_batch(custom, batch["id"], common.bearer(token)), 403)
