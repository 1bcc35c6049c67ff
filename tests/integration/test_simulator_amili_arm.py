"""The fake Amili ARM batch-status API over real loopback HTTP: bearer auth, Accept, the 202/200/206 life."""

from __future__ import annotations

import time

import pytest
import requests

from simulator import Simulator
from tests.sim import arm, common

sim = common.sim_fixture(token_ttl_seconds=arm.TTL, options=common.NO_AMILI_NO_SEED)
auth = common.token_fixture(common.ARM_CLIENT)


def test_client_credentials_token_works_and_is_reused(sim: Simulator, auth: dict[str, str]) -> None:
    """A token from POST /token with the ARM client serves repeated calls."""
    batch_uuid = sim.amili_arm.create_batch()
    for _ in range(3):
        assert arm.get_batch(sim, batch_uuid, auth).status_code == 202
    assert sim.amili_arm.tokens_issued == 1


def test_static_token_never_expires(sim: Simulator) -> None:
    """The configured static bearer token works and survives expire_tokens()."""
    batch_uuid = sim.amili_arm.create_batch()
    assert arm.get_batch(sim, batch_uuid, arm.STATIC).status_code == 202
    sim.amili_arm.expire_tokens()
    sim.amili_arm.token_service.time_fn = lambda: time.time() + 10 * arm.TTL
    assert arm.get_batch(sim, batch_uuid, arm.STATIC).status_code == 202


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
    response = arm.get_batch(sim, batch_uuid, headers)
    arm.assert_arm_error(response, 401)
    assert response.headers["WWW-Authenticate"] == challenge


def test_bad_client_credentials_get_no_token(sim: Simulator) -> None:
    """A wrong ARM client secret gets 401 invalid_client from the shared token endpoint."""
    response = requests.post(
        f"{sim.url}/token",
        data={"grant_type": "client_credentials", "client_id": "sim-arm-client", "client_secret": "nope"},
        timeout=common.TIMEOUT,
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert sim.amili_arm.tokens_issued == 0


def test_collection_token_is_not_valid_for_arm(sim: Simulator) -> None:
    """A token obtained with the collection client is refused by ARM."""
    batch_uuid = sim.amili_arm.create_batch()
    arm.assert_arm_error(
        arm.get_batch(sim, batch_uuid, common.bearer(common.new_token(sim, common.COLLECTION_CLIENT))), 401
    )


def test_expired_token_401_and_expire_tokens(sim: Simulator) -> None:
    """A token past its real-time expiry, or expired via Python or admin, gets 401; a new one works."""
    batch_uuid = sim.amili_arm.create_batch()
    before, expired = common.before_and_after_expiry(
        sim, sim.amili_arm, common.ARM_CLIENT, arm.TTL, lambda headers: arm.get_batch(sim, batch_uuid, headers)
    )
    assert before.status_code == 202
    arm.assert_arm_error(expired, 401)
    assert "expired" in expired.json()["message"]

    # Time stays past the first token's expiry, so only the new tokens are live below.
    fresh = common.new_token(sim, common.ARM_CLIENT)
    assert sim.amili_arm.expire_tokens() == 1
    arm.assert_arm_error(arm.get_batch(sim, batch_uuid, common.bearer(fresh)), 401)
    third = common.new_token(sim, common.ARM_CLIENT)
    admin = requests.post(f"{sim.url}/_sim/amili_arm/tokens/expire", timeout=common.TIMEOUT)
    assert admin.status_code == 200 and admin.json() == {"expired": 1, "tokens_issued": 3}
    arm.assert_arm_error(arm.get_batch(sim, batch_uuid, common.bearer(third)), 401)
    assert requests.get(f"{sim.url}/_sim/amili_arm/tokens", timeout=common.TIMEOUT).json() == {
        "tokens_issued": 3,
        "active": 0,
    }


def test_other_client_403_unknown_batch_404(sim: Simulator, auth: dict[str, str]) -> None:
    """Another client number gets 403, an unknown batch 404, both in ARM's error shape."""
    batch_uuid = sim.amili_arm.create_batch()
    arm.assert_arm_error(arm.get_batch(sim, batch_uuid, auth, client_no="2218"), 403)
    arm.assert_arm_error(arm.get_batch(sim, "00000000-0000-4000-8000-000000000000", auth), 404)
    assert arm.get_batch(sim, batch_uuid.upper(), auth).status_code == 202


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
    response = arm.get_batch(sim, batch_uuid, {**auth, "Accept": accept})
    if status == 406:
        arm.assert_arm_error(response, 406)
    else:
        assert response.status_code == status


def test_ok_life_202_then_200(sim: Simulator, auth: dict[str, str]) -> None:
    """An "ok" batch answers 202 while processing (documentsProcessed growing), then 200 PROCESSED."""
    batch_uuid = sim.amili_arm.create_batch(documents=4)
    assert common.UUID.match(batch_uuid)
    queued = arm.batch_at(sim, batch_uuid, auth, 202)
    assert list(queued) == arm.BODY_FIELDS
    assert (queued["batchUuid"], queued["clientNo"], queued["status"]) == (batch_uuid, 10001, "PROCESSING")
    assert common.ISO_Z.match(queued["created"]) and queued["finished"] is None
    assert (queued["documentsTotal"], queued["documentsProcessed"], queued["documentsFailed"]) == (4, 0, 0)
    assert queued["results"] == []

    arm.next_stage(sim)
    halfway = arm.batch_at(sim, batch_uuid, auth, 202)
    assert halfway["status"] == "PROCESSING" and halfway["finished"] is None
    assert halfway["documentsProcessed"] == 2 and len(halfway["results"]) == 2

    arm.next_stage(sim)
    done = arm.batch_at(sim, batch_uuid, auth, 200)
    assert done["status"] == "PROCESSED" and common.ISO_Z.match(done["finished"]) and done["finished"] > done["created"]
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
    assert arm.batch_at(sim, batch_uuid, auth, 200) == done


def test_partial_life_ends_206(sim: Simulator, auth: dict[str, str]) -> None:
    """A "partial" batch answers 202 twice, then 206 PARTIALLY_PROCESSED with FAILED results."""
    batch_uuid = sim.amili_arm.create_batch(scenario="partial")
    assert arm.batch_at(sim, batch_uuid, auth, 202)["documentsProcessed"] == 0
    arm.next_stage(sim)
    assert arm.batch_at(sim, batch_uuid, auth, 202)["documentsProcessed"] == 1
    arm.next_stage(sim)
    done = arm.batch_at(sim, batch_uuid, auth, 206)
    assert done["status"] == "PARTIALLY_PROCESSED" and done["finished"] is not None
    assert (done["documentsTotal"], done["documentsProcessed"], done["documentsFailed"]) == (3, 2, 1)
    failed = done["results"][-1]
    assert (failed["status"], failed["result"]) == ("FAILED", None) and failed["message"]
    assert [r["status"] for r in done["results"]] == ["PROCESSED", "PROCESSED", "FAILED"]


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator, auth: dict[str, str]) -> None:
    """Polling twice within one stage returns exactly the same bytes."""
    batch_uuid = sim.amili_arm.create_batch(scenario="partial", documents=5)
    for _ in range(3):
        first = arm.get_batch(sim, batch_uuid, auth).content
        sim.clock.advance(sim.config.stage_seconds * 0.4)
        assert arm.get_batch(sim, batch_uuid, auth).content == first
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
    assert arm.get_batch(sim, "batch-1", auth).status_code == 200
    assert sim.amili_arm.batch_body("batch-1")[0] == 200
