"""The fake Amili ARM batch-status API over real loopback HTTP: bearer auth, 202/200/206 life, faults."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorConfig

ARM_CLIENT = {"client_id": "sim-arm-client", "client_secret": "sim-arm-secret"}
COLLECTION_CLIENT = {"client_id": "sim-collection-client", "client_secret": "sim-collection-secret"}
STATIC = {"Authorization": "Bearer sim-arm-static-token"}
CLIENT_NO = "10001"
TTL = 120
TIMEOUT = 5
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BODY_FIELDS = [
    "batchUuid", "clientNo", "status", "created", "finished", "documentsTotal", "documentsProcessed",
    "documentsFailed", "results",
]  # fmt: skip


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A frozen-clock simulator with no seeded Amili items, on a free port."""
    options = {"amili_collection_seed": 0, "amili_arm_seed": 0}
    simulator = Simulator(
        SimulatorConfig(port=0, speed=0, seed_orders=0, token_ttl_seconds=TTL, options=options)
    ).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def new_token(sim: Simulator, client: dict[str, str] = ARM_CLIENT) -> str:
    response = requests.post(f"{sim.url}/token", data={"grant_type": "client_credentials", **client}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth(sim: Simulator) -> dict[str, str]:
    """Bearer headers with a fresh token for the ARM client."""
    return bearer(new_token(sim))


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


# ---- auth -----------------------------------------------------------------------


def test_client_credentials_token_works_and_is_reused(sim: Simulator, auth: dict[str, str]) -> None:
    """A token from POST /token with the ARM client serves repeated calls."""
    batch_uuid = sim.amili_arm.create_batch()
    for _ in range(3):
        assert get_batch(sim, batch_uuid, auth).status_code == 202
    assert sim.amili_arm.tokens_issued == 1


def test_static_token_never_expires(sim: Simulator) -> None:
    """The configured static bearer token works and survives expire_tokens()."""
    batch_uuid = sim.amili_arm.create_batch()
    assert get_batch(sim, batch_uuid, STATIC).status_code == 202
    sim.amili_arm.expire_tokens()
    sim.amili_arm.token_service.time_fn = lambda: time.time() + 10 * TTL
    assert get_batch(sim, batch_uuid, STATIC).status_code == 202


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, "Bearer"),
        ({"Authorization": "Bearer not-a-token"}, 'Bearer error="invalid_token"'),
        ({"Authorization": "sim-arm-static-token"}, "Bearer"),
        ({"Authorization": "Bearer sim-arm-static-token-2"}, 'Bearer error="invalid_token"'),
    ],
    ids=["missing", "unknown-token", "no-scheme", "near-static"],
)
def test_missing_or_invalid_token_401(sim: Simulator, headers: dict[str, str], challenge: str) -> None:
    """Missing or invalid bearer tokens get 401 with ARM's error body."""
    batch_uuid = sim.amili_arm.create_batch()
    response = get_batch(sim, batch_uuid, headers)
    assert_arm_error(response, 401)
    assert response.headers["WWW-Authenticate"] == challenge


def test_bad_client_credentials_get_no_token(sim: Simulator) -> None:
    """A wrong ARM client secret gets 401 invalid_client from the shared token endpoint."""
    response = requests.post(
        f"{sim.url}/token",
        data={"grant_type": "client_credentials", "client_id": "sim-arm-client", "client_secret": "nope"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert sim.amili_arm.tokens_issued == 0


def test_collection_token_is_not_valid_for_arm(sim: Simulator) -> None:
    """A token obtained with the collection client is refused by ARM."""
    batch_uuid = sim.amili_arm.create_batch()
    assert_arm_error(get_batch(sim, batch_uuid, bearer(new_token(sim, COLLECTION_CLIENT))), 401)


def test_expired_token_401_and_expire_tokens(sim: Simulator) -> None:
    """A token past its real-time expiry, or expired via Python or admin, gets 401; a new one works."""
    batch_uuid = sim.amili_arm.create_batch()
    service = sim.amili_arm.token_service
    start = time.time()
    service.time_fn = lambda: start
    token = new_token(sim)
    assert get_batch(sim, batch_uuid, bearer(token)).status_code == 202
    service.time_fn = lambda: start + TTL
    expired = get_batch(sim, batch_uuid, bearer(token))
    assert_arm_error(expired, 401)
    assert "expired" in expired.json()["message"]

    # Time stays past the first token's expiry, so only the new tokens are live below.
    fresh = new_token(sim)
    assert sim.amili_arm.expire_tokens() == 1
    assert_arm_error(get_batch(sim, batch_uuid, bearer(fresh)), 401)
    third = new_token(sim)
    admin = requests.post(f"{sim.url}/_sim/amili_arm/tokens/expire", timeout=TIMEOUT)
    assert admin.status_code == 200 and admin.json() == {"expired": 1, "tokens_issued": 3}
    assert_arm_error(get_batch(sim, batch_uuid, bearer(third)), 401)
    assert requests.get(f"{sim.url}/_sim/amili_arm/tokens", timeout=TIMEOUT).json() == {
        "tokens_issued": 3,
        "active": 0,
    }


def test_other_client_403_unknown_batch_404(sim: Simulator, auth: dict[str, str]) -> None:
    """Another client number gets 403, an unknown batch 404, both in ARM's error shape."""
    batch_uuid = sim.amili_arm.create_batch()
    assert_arm_error(get_batch(sim, batch_uuid, auth, client_no="2218"), 403)
    assert_arm_error(get_batch(sim, "00000000-0000-4000-8000-000000000000", auth), 404)
    assert get_batch(sim, batch_uuid.upper(), auth).status_code == 202


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("text/xml", 406),
        ("application/xml, text/html", 406),
        ("application/json;q=0, text/xml", 406),
        ("application/json", 202),
        ("application/json, text/plain, */*", 202),
        ("*/*", 202),
        ("application/*;q=0.5", 202),
    ],
)
def test_accept_header_negotiation(sim: Simulator, auth: dict[str, str], accept: str, status: int) -> None:
    """An Accept header that rules out JSON gets 406; JSON-compatible ones are served."""
    batch_uuid = sim.amili_arm.create_batch()
    response = get_batch(sim, batch_uuid, {**auth, "Accept": accept})
    if status == 406:
        assert_arm_error(response, 406)
    else:
        assert response.status_code == status


# ---- batch lives ----------------------------------------------------------------


def test_ok_life_202_then_200(sim: Simulator, auth: dict[str, str]) -> None:
    """An "ok" batch answers 202 while processing (documentsProcessed growing), then 200 PROCESSED."""
    batch_uuid = sim.amili_arm.create_batch(documents=4)
    assert UUID.match(batch_uuid)
    queued = batch_at(sim, batch_uuid, auth, 202)
    assert list(queued) == BODY_FIELDS
    assert (queued["batchUuid"], queued["clientNo"], queued["status"]) == (batch_uuid, 10001, "PROCESSING")
    assert ISO_Z.match(queued["created"]) and queued["finished"] is None
    assert (queued["documentsTotal"], queued["documentsProcessed"], queued["documentsFailed"]) == (4, 0, 0)
    assert queued["results"] == []

    next_stage(sim)
    halfway = batch_at(sim, batch_uuid, auth, 202)
    assert halfway["status"] == "PROCESSING" and halfway["finished"] is None
    assert halfway["documentsProcessed"] == 2 and len(halfway["results"]) == 2

    next_stage(sim)
    done = batch_at(sim, batch_uuid, auth, 200)
    assert done["status"] == "PROCESSED" and ISO_Z.match(done["finished"]) and done["finished"] > done["created"]
    assert (done["documentsTotal"], done["documentsProcessed"], done["documentsFailed"]) == (4, 4, 0)
    first = done["results"][0]
    assert list(first) == ["documentNo", "status", "result", "message", "warnings"]
    assert (first["documentNo"], first["status"], first["result"], first["message"]) == (
        "88776655", "PROCESSED", "CREATED", "CREATED",
    )  # fmt: skip
    assert first["warnings"] and set(first["warnings"][0]) == {"field", "message"}
    assert done["results"][:2] == halfway["results"]
    assert len({r["documentNo"] for r in done["results"]}) == 4

    sim.clock.advance(100)
    assert batch_at(sim, batch_uuid, auth, 200) == done


def test_partial_life_ends_206(sim: Simulator, auth: dict[str, str]) -> None:
    """A "partial" batch answers 202 twice, then 206 PARTIALLY_PROCESSED with FAILED results."""
    batch_uuid = sim.amili_arm.create_batch(scenario="partial")
    assert batch_at(sim, batch_uuid, auth, 202)["documentsProcessed"] == 0
    next_stage(sim)
    assert batch_at(sim, batch_uuid, auth, 202)["documentsProcessed"] == 1
    next_stage(sim)
    done = batch_at(sim, batch_uuid, auth, 206)
    assert done["status"] == "PARTIALLY_PROCESSED" and done["finished"] is not None
    assert (done["documentsTotal"], done["documentsProcessed"], done["documentsFailed"]) == (3, 2, 1)
    failed = done["results"][-1]
    assert (failed["status"], failed["result"]) == ("FAILED", None) and failed["message"]
    assert [r["status"] for r in done["results"]] == ["PROCESSED", "PROCESSED", "FAILED"]


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator, auth: dict[str, str]) -> None:
    """Polling twice within one stage returns exactly the same bytes."""
    batch_uuid = sim.amili_arm.create_batch(scenario="partial", documents=5)
    for _ in range(3):
        first = get_batch(sim, batch_uuid, auth).content
        sim.clock.advance(sim.config.stage_seconds * 0.4)
        assert get_batch(sim, batch_uuid, auth).content == first
        sim.clock.advance(sim.config.stage_seconds * 0.6)


def test_create_batch_validation_and_set_stage(sim: Simulator, auth: dict[str, str]) -> None:
    """create_batch checks its arguments; set_stage jumps a batch to the end."""
    with pytest.raises(ValueError, match="scenario"):
        sim.amili_arm.create_batch(scenario="lost")
    with pytest.raises(ValueError, match="documents"):
        sim.amili_arm.create_batch(documents=0)
    with pytest.raises(ValueError, match="partial"):
        sim.amili_arm.create_batch(scenario="partial", documents=1)
    sim.amili_arm.create_batch("batch-1")
    with pytest.raises(ValueError, match="already exists"):
        sim.amili_arm.create_batch("BATCH-1")
    sim.amili_arm.set_stage("batch-1", 2)
    assert get_batch(sim, "batch-1", auth).status_code == 200
    assert sim.amili_arm.batch_body("batch-1")[0] == 200


# ---- faults ---------------------------------------------------------------------


def test_fault_500_503_429(sim: Simulator, auth: dict[str, str]) -> None:
    """ "500" is an HTML page, "503" plain, "429" ARM's error body with Retry-After."""
    batch_uuid = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "500", count=1)
    sim.faults.add("amili_arm", "503", count=1)
    sim.faults.add("amili_arm", "429", count=1, retry_after=6)
    first = get_batch(sim, batch_uuid, auth)
    assert first.status_code == 500 and first.headers["Content-Type"].startswith("text/html")
    assert get_batch(sim, batch_uuid, auth).status_code == 503
    limited = get_batch(sim, batch_uuid, auth)
    assert_arm_error(limited, 429)
    assert limited.headers["Retry-After"] == "6"
    assert get_batch(sim, batch_uuid, auth).status_code == 202


def test_fault_slow_trips_client_timeout(sim: Simulator, auth: dict[str, str]) -> None:
    """A "slow" fault delays the answer past a short client timeout."""
    batch_uuid = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "slow", delay=0.5, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get_batch(sim, batch_uuid, auth, timeout=0.2)
    assert get_batch(sim, batch_uuid, auth, timeout=0.2).status_code == 202


def test_fault_malformed_and_html(sim: Simulator, auth: dict[str, str]) -> None:
    """ "malformed" answers 200 JSON that does not parse; "html" answers a 200 HTML page."""
    batch_uuid = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "malformed", count=1)
    sim.faults.add("amili_arm", "html", count=1)
    broken = get_batch(sim, batch_uuid, auth)
    assert broken.status_code == 200 and broken.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)
    html = get_batch(sim, batch_uuid, auth)
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")


def test_fault_404_and_401_use_arm_bodies(sim: Simulator, auth: dict[str, str]) -> None:
    """ "404" and "401" faults answer ARM's error body even for a valid batch."""
    batch_uuid = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "404", count=1)
    sim.faults.add("amili_arm", "401", count=1)
    assert_arm_error(get_batch(sim, batch_uuid, auth), 404)
    assert_arm_error(get_batch(sim, batch_uuid, auth), 401)
    assert get_batch(sim, batch_uuid, auth).status_code == 202


def test_faults_after_auth_and_scoped_by_batch(sim: Simulator, auth: dict[str, str]) -> None:
    """Rejected requests do not consume faults; a fault scoped to one batch leaves others alone."""
    first = sim.amili_arm.create_batch()
    second = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "500", count=1, ref=second)
    assert get_batch(sim, second, {}).status_code == 401
    assert get_batch(sim, second, {**auth, "Accept": "text/xml"}).status_code == 406
    assert get_batch(sim, second, auth, client_no="1").status_code == 403
    assert get_batch(sim, first, auth).status_code == 202
    assert get_batch(sim, second, auth).status_code == 500


def test_token_fault_hits_only_arm_token_calls(sim: Simulator) -> None:
    """A fault with ref "token" for amili_arm fails ARM token calls but not collection ones or the API."""
    batch_uuid = sim.amili_arm.create_batch()
    sim.faults.add("amili_arm", "500", count=1, ref="token")
    collection = requests.post(
        f"{sim.url}/token", data={"grant_type": "client_credentials", **COLLECTION_CLIENT}, timeout=TIMEOUT
    )
    assert collection.status_code == 200
    arm = requests.post(f"{sim.url}/token", data={"grant_type": "client_credentials", **ARM_CLIENT}, timeout=TIMEOUT)
    assert arm.status_code == 500 and arm.headers["Content-Type"].startswith("text/html")
    assert get_batch(sim, batch_uuid, STATIC).status_code == 202
    assert get_batch(sim, batch_uuid, bearer(new_token(sim))).status_code == 202


# ---- admin, seeding, env ----------------------------------------------------------


def test_admin_create_list_and_stage(sim: Simulator, auth: dict[str, str]) -> None:
    """Batches created, listed and staged over the admin API change what ARM answers."""
    base = f"{sim.url}/_sim/amili_arm/batches"
    created = requests.post(base, json={"batchUuid": "b-1", "scenario": "partial", "documents": 6}, timeout=TIMEOUT)
    assert created.status_code == 201 and created.json() == {"batchUuid": "b-1"}
    auto = requests.post(base, json={}, timeout=TIMEOUT)
    assert auto.status_code == 201 and UUID.match(auto.json()["batchUuid"])
    by_id = requests.post(base, json={"id": "b-2"}, timeout=TIMEOUT)
    assert by_id.json() == {"batchUuid": "b-2"}

    staged = requests.post(f"{base}/b-1/stage", json={"stage": 2}, timeout=TIMEOUT)
    assert staged.json() == {"batchUuid": "b-1", "stage": 2}
    done = batch_at(sim, "b-1", auth, 206)
    assert (done["documentsProcessed"], done["documentsFailed"]) == (4, 2)
    listed = requests.get(base, timeout=TIMEOUT).json()["batches"]
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
    response = requests.post(f"{sim.url}/_sim/amili_arm/batches{path}", json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]


def test_admin_stage_unknown_batch_404(sim: Simulator) -> None:
    """Staging an unknown batch answers 404."""
    response = requests.post(f"{sim.url}/_sim/amili_arm/batches/nope/stage", json={"stage": 1}, timeout=TIMEOUT)
    assert response.status_code == 404 and response.json()["error"]


def test_seed_env_and_describe() -> None:
    """Two batches ("ok" and "partial") are seeded by default; env() points the poller here."""
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0)).start() as seeded:
        assert [b["scenario"] for b in seeded.amili_arm.batches()] == ["ok", "partial"]
        assert seeded.amili_arm.env(seeded.url) == {
            "POLLER_AMILI_ARM__BASE_URL": seeded.url,
            "POLLER_AMILI_ARM__AUTH_URL": seeded.url,
            "POLLER_AMILI_ARM__CLIENT_ID": "sim-arm-client",
            "POLLER_AMILI_ARM__CLIENT_SECRET": "sim-arm-secret",
            "POLLER_AMILI_ARM__CLIENT_NO": CLIENT_NO,
        }
        text = seeded.describe()
        assert f"export POLLER_AMILI_ARM__CLIENT_NO={CLIENT_NO}" in text
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
    with Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, options=options)).start() as custom:
        [batch] = custom.amili_arm.batches()
        assert_arm_error(get_batch(custom, batch["id"], STATIC, client_no="2218"), 401)
        assert_arm_error(get_batch(custom, batch["id"], {"Authorization": "Bearer "}, client_no="2218"), 401)
        token = new_token(custom, {"client_id": "arm-id", "client_secret": "arm-secret"})
        response = get_batch(custom, batch["id"], bearer(token), client_no="2218")
        assert response.status_code == 202 and response.json()["clientNo"] == 2218
        assert_arm_error(get_batch(custom, batch["id"], bearer(token)), 403)
