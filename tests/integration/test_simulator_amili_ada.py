"""The fake Amili ADA (Sweden) API over real loopback HTTP: the JWT login and its access tokens."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from simulator import Simulator
from simulator.amili_ada import FakeAmiliAda
from tests.sim import ada, common

sim = common.sim_fixture(stage_seconds=ada.STAGE, options=ada.ada_options)


def test_login_with_signed_jwt_returns_token_and_rfc1123_expiry(tmp_path: Path) -> None:
    """GET /authenticates/api-code with a good JWT answers {"token", "expires"}, expiry = now + TTL."""
    with common.running(token_ttl_seconds=120, options={"amili_ada_key_dir": str(tmp_path)}) as simulator:
        before = time.time()
        response = ada.login(simulator, ada.fake(simulator).make_login_jwt())
        assert response.status_code == 200
        body = response.json()
        assert list(body) == ["token", "expires"]
        assert isinstance(body["token"], str) and len(body["token"]) >= 32
        assert ada.RFC1123.match(body["expires"])
        expires = parsedate_to_datetime(body["expires"]).timestamp()
        assert before + 120 - 2 <= expires <= time.time() + 120 + 1
        assert ada.fake(simulator).tokens_issued == 1


def test_login_with_api_code_body(sim: Simulator) -> None:
    """POST /authenticates/api-code with {"api_code"} (static-IP method) returns a working token."""
    response = requests.post(
        f"{sim.url}/authenticates/api-code", json={"api_code": "sim-ada-api-code"}, timeout=common.TIMEOUT
    )
    assert response.status_code == 200
    assert ada.get(sim, "/cases", response.json()["token"]).status_code == 200
    wrong = requests.post(f"{sim.url}/authenticates/api-code", json={"api_code": "nope"}, timeout=common.TIMEOUT)
    ada.assert_eve_error(wrong, 401)
    empty = requests.post(f"{sim.url}/authenticates/api-code", json={}, timeout=common.TIMEOUT)
    ada.assert_eve_error(empty, 400)


def _bad_login_jwts(provider: FakeAmiliAda) -> dict[str, tuple[str | None, int]]:
    now = int(time.time())
    other = ec.generate_private_key(ec.SECP521R1())
    key = provider.private_key_pem
    assert key is not None
    return {
        "missing": (None, 401),
        "garbage": ("not-a-jwt", 401),
        "wrong-key": (ada.sign({"api_code": provider.api_code, "exp": now + 600}, other, "ES512"), 401),
        "hs256": (ada.sign({"api_code": provider.api_code, "exp": now + 600}, "s" * 32, "HS256"), 401),
        "wrong-api-code": (ada.sign({"api_code": "other", "exp": now + 600}, key, "ES512"), 401),
        "expired": (ada.sign({"api_code": provider.api_code, "exp": now - 5}, key, "ES512"), 401),
        "too-far-ahead": (ada.sign({"api_code": provider.api_code, "exp": now + 16 * 60}, key, "ES512"), 400),
        "no-exp": (ada.sign({"api_code": provider.api_code}, key, "ES512"), 400),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case", ["missing", "garbage", "wrong-key", "hs256", "wrong-api-code", "expired", "too-far-ahead", "no-exp"]
)
def test_login_rejections(sim: Simulator, case: str) -> None:
    """Bad login JWTs get Eve errors: 401 for bad credentials or expired, 400 for a malformed exp."""
    signed, status = _bad_login_jwts(ada.fake(sim))[case]
    ada.assert_eve_error(ada.login(sim, signed), status)
    assert ada.fake(sim).tokens_issued == 0


def test_env_points_at_a_usable_private_key_file(sim: Simulator) -> None:
    """env() names the key file and algorithm; a JWT signed from that file logs in."""
    env = ada.fake(sim).env(sim.url)
    assert set(env) == {
        "POLLER_AMILI_ADA__BASE_URL",
        "POLLER_AMILI_ADA__API_CODE",
        "POLLER_AMILI_ADA__ALGORITHM",
        "POLLER_AMILI_ADA__PRIVATE_KEY_FILE",
    }
    assert env["POLLER_AMILI_ADA__BASE_URL"] == sim.url
    assert env["POLLER_AMILI_ADA__ALGORITHM"] == "ES512"
    pem = Path(env["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"]).read_text()
    assert pem == ada.fake(sim).private_key_pem
    assert ada.fake(sim).public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    signed = ada.sign({"api_code": env["POLLER_AMILI_ADA__API_CODE"], "exp": int(time.time()) + 600}, pem, "ES512")
    assert ada.login(sim, signed).status_code == 200
    assert sim.env()["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"] == env["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"]


def test_generated_key_goes_to_a_temp_dir_by_default() -> None:
    """Without amili_ada_key_dir the generated key is written to a fresh temp dir."""
    with common.running() as simulator:
        path = ada.fake(simulator).private_key_path
        assert path is not None and Path(path).read_text() == ada.fake(simulator).private_key_pem
        assert Path(path).stat().st_mode & 0o077 == 0


def test_configured_rsa_public_key(tmp_path: Path) -> None:
    """With amili_ada_public_key_pem set, JWTs signed by its private key (RS256) log in; env has no key file."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with ada.running(tmp_path, amili_ada_public_key_pem=public_pem, amili_ada_api_code="my-code") as simulator:
        provider = ada.fake(simulator)
        assert provider.private_key_pem is None and provider.private_key_path is None
        assert provider.env(simulator.url) == {
            "POLLER_AMILI_ADA__BASE_URL": simulator.url,
            "POLLER_AMILI_ADA__API_CODE": "my-code",
        }
        signed = ada.sign({"api_code": "my-code", "exp": int(time.time()) + 600}, private, "RS256")
        assert ada.login(simulator, signed).status_code == 200
        assert not (tmp_path / "keys").exists()


def test_cases_need_a_valid_access_token(sim: Simulator) -> None:
    """Missing or unknown X-API-Key on /cases gets 401; the login JWT itself is not an access token."""
    case_id = ada.fake(sim).create_case()
    ada.assert_eve_error(ada.get(sim, "/cases", None), 401)
    ada.assert_eve_error(ada.get(sim, f"/cases/{case_id}", "made-up"), 401)
    ada.assert_eve_error(ada.get(sim, "/cases", ada.fake(sim).make_login_jwt()), 401)


def test_token_is_reused_across_calls(sim: Simulator) -> None:
    """One access token serves many calls; only one was issued."""
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    for _ in range(3):
        assert ada.get(sim, f"/cases/{case_id}", tok).status_code == 200
    assert ada.fake(sim).tokens_issued == 1


def test_expire_tokens_makes_calls_401_until_new_login(sim: Simulator) -> None:
    """expire_tokens() (and the admin route) turn live tokens into 401; a fresh login works."""
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    assert ada.fake(sim).expire_tokens() == 1
    ada.assert_eve_error(ada.get(sim, f"/cases/{case_id}", tok), 401)
    fresh = ada.token(sim)
    assert ada.get(sim, f"/cases/{case_id}", fresh).status_code == 200
    expired = requests.post(f"{sim.url}/_sim/amili_ada/tokens/expire", timeout=common.TIMEOUT)
    assert expired.status_code == 200 and expired.json() == {"expired": 1, "tokens_issued": 2}
    ada.assert_eve_error(ada.get(sim, f"/cases/{case_id}", fresh), 401)


def test_token_expires_after_ttl_in_real_time(tmp_path: Path) -> None:
    """Once wall time passes token_ttl_seconds the token gets 401 "expired"."""
    with common.running(token_ttl_seconds=30, options={"amili_ada_key_dir": str(tmp_path)}) as simulator:
        tok = ada.token(simulator)
        assert ada.get(simulator, "/cases", tok).status_code == 200
        ada.fake(simulator).wall_time = lambda: time.time() + 31
        response = ada.get(simulator, "/cases", tok)
        ada.assert_eve_error(response, 401)
        assert "expired" in response.json()["_error"]["message"]
