"""The fake Billit's OAuth2 over real loopback HTTP: token grants, rotation, bearer access, faults."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorConfig
from tests.sim import billit, common

CLIENT = {"client_id": "sim-billit-client", "client_secret": "sim-billit-secret"}
TTL = 120


sim = common.sim_fixture(token_ttl_seconds=TTL, options={"billit_oauth": True})


def post_token(sim: Simulator, payload: Any, timeout: float = common.TIMEOUT) -> requests.Response:
    return requests.post(f"{sim.url}/OAuth2/token", json=payload, timeout=timeout)


def refresh(sim: Simulator, refresh_token: str, timeout: float = common.TIMEOUT) -> requests.Response:
    payload = {"grant_type": "refresh_token", **CLIENT, "refresh_token": refresh_token}
    return post_token(sim, payload, timeout)


def new_access_token(sim: Simulator) -> str:
    response = refresh(sim, sim.billit.current_refresh_token)
    assert response.status_code == 200
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "PartyID": "1234"}


# ---- token endpoint -------------------------------------------------------------


def test_refresh_grant_returns_documented_body(sim: Simulator) -> None:
    """The configured refresh token buys a Bearer access token and a new refresh token."""
    before = time.time()
    response = refresh(sim, "sim-billit-refresh-0")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert list(body) == ["token_type", "expires_in", "access_token", "refresh_token"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == TTL and isinstance(body["expires_in"], int)
    assert body["access_token"] and body["refresh_token"] != "sim-billit-refresh-0"
    assert sim.billit.current_refresh_token == body["refresh_token"]
    assert (sim.billit.tokens_issued, sim.billit.refresh_tokens_issued, sim.billit.refreshes_ok) == (1, 1, 1)
    # Expiry is real wall-clock time, TTL seconds after issue.
    sim.billit.oauth.wall_time = lambda: before + TTL - 1
    assert billit.get_order(sim, sim.billit.create_order(), bearer(body["access_token"])).status_code == 200


def test_refresh_token_rotates_and_spent_one_is_rejected(sim: Simulator) -> None:
    """Each refresh kills the token it used; reusing it gets 400 InvalidRefreshToken."""
    first = refresh(sim, "sim-billit-refresh-0").json()
    billit.assert_billit_error(refresh(sim, "sim-billit-refresh-0"), 400, "InvalidRefreshToken")
    second = refresh(sim, first["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] not in ("sim-billit-refresh-0", first["refresh_token"])
    assert second.json()["access_token"] != first["access_token"]
    billit.assert_billit_error(refresh(sim, first["refresh_token"]), 400, "InvalidRefreshToken")
    billit.assert_billit_error(refresh(sim, "never-issued"), 400, "InvalidRefreshToken")
    assert (sim.billit.refreshes_ok, sim.billit.refreshes_rejected) == (2, 3)
    assert sim.billit.refresh_tokens_issued == 2
    assert sim.billit.current_refresh_token == second.json()["refresh_token"]
    # Access tokens from before a rotation stay good until they expire.
    order_id = sim.billit.create_order()
    assert billit.get_order(sim, order_id, bearer(first["access_token"])).status_code == 200


def test_authorization_code_grant_works_once(sim: Simulator) -> None:
    """The authorization code is exchanged once (any redirect_uri); a second use is refused."""
    payload = {"grant_type": "authorization_code", **CLIENT, "code": "sim-billit-code",
               "redirect_uri": "https://localhost/callback"}
    response = post_token(sim, payload)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == TTL
    # A new authorization starts a new grant: its refresh token replaces the configured one.
    assert sim.billit.current_refresh_token == body["refresh_token"]
    billit.assert_billit_error(refresh(sim, "sim-billit-refresh-0"), 400, "InvalidRefreshToken")
    billit.assert_billit_error(post_token(sim, payload), 400, "InvalidAuthorizationCode")
    wrong_code = {**payload, "code": "guess"}
    billit.assert_billit_error(post_token(sim, wrong_code), 400, "InvalidAuthorizationCode")
    assert refresh(sim, body["refresh_token"]).status_code == 200


def test_wrong_client_is_401_and_does_not_spend_the_refresh_token(sim: Simulator) -> None:
    """A wrong client_id or client_secret gets 401 InvalidClient and leaves the grant alone."""
    for client in ({**CLIENT, "client_secret": "wrong"}, {**CLIENT, "client_id": "other-client"}):
        payload = {"grant_type": "refresh_token", **client, "refresh_token": "sim-billit-refresh-0"}
        billit.assert_billit_error(post_token(sim, payload), 401, "InvalidClient")
    assert sim.billit.current_refresh_token == "sim-billit-refresh-0"
    assert (sim.billit.tokens_issued, sim.billit.refreshes_rejected) == (0, 0)
    assert refresh(sim, "sim-billit-refresh-0").status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"grant_type": "client_credentials", **CLIENT},
        {**CLIENT, "refresh_token": "sim-billit-refresh-0"},
        {"grant_type": "refresh_token", **CLIENT},
        {"grant_type": "refresh_token", "client_id": "sim-billit-client", "refresh_token": "sim-billit-refresh-0"},
        {"grant_type": "authorization_code", **CLIENT, "code": "sim-billit-code"},
        {"grant_type": "refresh_token", **CLIENT, "refresh_token": 7},
        ["grant_type", "refresh_token"],
    ],
    ids=["client-credentials", "no-grant-type", "no-refresh-token", "no-secret", "no-redirect-uri",
         "non-string", "not-an-object"],
)
def test_bad_token_request_body_is_400_generic_error(sim: Simulator, payload: Any) -> None:
    """Incomplete or unsupported token requests get 400 GenericError."""
    billit.assert_billit_error(post_token(sim, payload), 400, "GenericError")
    assert sim.billit.current_refresh_token == "sim-billit-refresh-0"


def test_token_body_that_is_not_json_is_400_generic_error(sim: Simulator) -> None:
    """A form-encoded or garbled body is not Billit's JSON token request."""
    response = requests.post(f"{sim.url}/OAuth2/token", data="grant_type=refresh_token&x", timeout=common.TIMEOUT,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    billit.assert_billit_error(response, 400, "GenericError")


def test_concurrent_refresh_with_same_token_has_one_winner(sim: Simulator) -> None:
    """Two clients racing with one refresh token: exactly one 200 and one 400 InvalidRefreshToken."""
    barrier = threading.Barrier(2)
    results: list[tuple[int, dict[str, Any]]] = []
    results_lock = threading.Lock()

    def race() -> None:
        barrier.wait(timeout=common.TIMEOUT)
        response = refresh(sim, "sim-billit-refresh-0")
        with results_lock:
            results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=common.TIMEOUT)
    assert sorted(status for status, _ in results) == [200, 400]
    winner = next(body for status, body in results if status == 200)
    loser = next(body for status, body in results if status == 400)
    assert loser["errors"][0]["Code"] == "InvalidRefreshToken"
    assert sim.billit.current_refresh_token == winner["refresh_token"]
    assert (sim.billit.refreshes_ok, sim.billit.refreshes_rejected, sim.billit.tokens_issued) == (1, 1, 1)


# ---- bearer access to orders ------------------------------------------------------


def test_bearer_token_reads_orders_like_the_api_key(sim: Simulator) -> None:
    """A valid access token plus PartyID gets the same bytes as the ApiKey does."""
    order_id = sim.billit.create_order()
    token = new_access_token(sim)
    with_bearer = billit.get_order(sim, order_id, bearer(token))
    with_key = billit.get_order(sim, order_id, billit.AUTH)
    assert with_bearer.status_code == with_key.status_code == 200
    assert with_bearer.content == with_key.content
    assert with_bearer.json()["OrderID"] == order_id
    # The token is reused across polls without new token calls.
    assert billit.get_order(sim, order_id, {"authorization": f"bearer {token}", "PartyID": "1234"}).status_code == 200
    assert sim.billit.tokens_issued == 1


def test_api_key_still_works_with_oauth_on(sim: Simulator) -> None:
    """The ApiKey header keeps working next to OAuth2, and a wrong key is still 401 Unauthorized."""
    order_id = sim.billit.create_order()
    assert billit.get_order(sim, order_id, billit.AUTH).status_code == 200
    billit.assert_billit_error(billit.get_order(sim, order_id, {**billit.AUTH, "ApiKey": "wrong"}), 401, "Unauthorized")
    assert sim.billit.tokens_issued == 0


def test_unknown_bearer_token_is_invalid_access_token(sim: Simulator) -> None:
    """A bearer token never issued gets 401 InvalidAccessToken."""
    order_id = sim.billit.create_order()
    billit.assert_billit_error(billit.get_order(sim, order_id, bearer("not-a-token")), 401, "InvalidAccessToken")
    billit.assert_billit_error(billit.get_order(sim, order_id, {"Authorization": "Bearer ", "PartyID": "1234"}),
                        401, "InvalidAccessToken")


def test_expired_bearer_token_is_access_token_expired(sim: Simulator) -> None:
    """Past its wall-clock expiry an access token gets 401 AccessTokenExpired; a refresh fixes it."""
    order_id = sim.billit.create_order()
    issued_at = time.time()
    token = new_access_token(sim)
    sim.billit.oauth.wall_time = lambda: issued_at + TTL + 1
    billit.assert_billit_error(billit.get_order(sim, order_id, bearer(token)), 401, "AccessTokenExpired")
    fresh = new_access_token(sim)
    assert billit.get_order(sim, order_id, bearer(fresh)).status_code == 200


def test_expire_tokens_revokes_access_tokens(sim: Simulator) -> None:
    """expire_tokens() makes every issued access token 401 AccessTokenRevoked, not the refresh token."""
    order_id = sim.billit.create_order()
    first, second = new_access_token(sim), new_access_token(sim)
    assert sim.billit.expire_tokens() == 2
    for token in (first, second):
        billit.assert_billit_error(billit.get_order(sim, order_id, bearer(token)), 401, "AccessTokenRevoked")
    assert billit.get_order(sim, order_id, bearer(new_access_token(sim))).status_code == 200
    assert sim.billit.tokens_issued == 3


def test_admin_expire_and_token_info_routes(sim: Simulator) -> None:
    """POST /_sim/billit/tokens/expire revokes; GET /_sim/billit/tokens shows the grant's state."""
    order_id = sim.billit.create_order()
    token = new_access_token(sim)
    info = requests.get(f"{sim.url}/_sim/billit/tokens", timeout=common.TIMEOUT)
    assert info.status_code == 200
    assert info.json() == {
        "oauth_enabled": True,
        "client_id": "sim-billit-client",
        "current_refresh_token": sim.billit.current_refresh_token,
        "tokens_issued": 1,
        "access_tokens_live": 1,
        "refresh_tokens_issued": 1,
        "refreshes_ok": 1,
        "refreshes_rejected": 0,
    }
    expired = requests.post(f"{sim.url}/_sim/billit/tokens/expire", timeout=common.TIMEOUT)
    assert expired.status_code == 200 and expired.json() == {"revoked": 1}
    billit.assert_billit_error(billit.get_order(sim, order_id, bearer(token)), 401, "AccessTokenRevoked")
    bad = requests.post(f"{sim.url}/_sim/billit/tokens/expire", json={"all": True}, timeout=common.TIMEOUT)
    assert bad.status_code == 400 and "error" in bad.json()


def test_bearer_needs_the_right_party_id(sim: Simulator) -> None:
    """A good token without PartyID, or with another company's, gets 401 Unauthorized."""
    order_id = sim.billit.create_order()
    token = new_access_token(sim)
    without_party = billit.get_order(sim, order_id, {"Authorization": f"Bearer {token}"})
    billit.assert_billit_error(without_party, 401, "Unauthorized")
    billit.assert_billit_error(
        billit.get_order(sim, order_id, {**bearer(token), "PartyID": "9999"}), 401, "Unauthorized"
    )


def test_bearer_errors_do_not_consume_order_faults(sim: Simulator) -> None:
    """A rejected bearer token is answered before faults, as with a bad ApiKey."""
    order_id = sim.billit.create_order()
    sim.faults.add("billit", "500", count=1)
    billit.assert_billit_error(billit.get_order(sim, order_id, bearer("not-a-token")), 401, "InvalidAccessToken")
    assert billit.get_order(sim, order_id, bearer(new_access_token(sim))).status_code == 500


# ---- token-endpoint faults ----------------------------------------------------------


def test_order_faults_do_not_hit_the_token_endpoint(sim: Simulator) -> None:
    """An unscoped billit fault fails the orders, not /OAuth2/token, and is not consumed by it."""
    sim.faults.add("billit", "503", count=1)
    assert refresh(sim, "sim-billit-refresh-0").status_code == 200
    assert len(sim.faults.active("billit")) == 1


@pytest.mark.parametrize(
    ("kind", "status"),
    [("500", 500), ("503", 503), ("429", 429), ("404", 404), ("401", 401), ("malformed", 200), ("html", 200)],
)
def test_token_fault_fails_the_token_endpoint_without_spending_the_grant(
    sim: Simulator, kind: str, status: int
) -> None:
    """A fault with ref "token" breaks one token call; the refresh token still works afterwards."""
    sim.faults.add("billit", kind, count=1, ref="token")
    response = post_token(sim, {"grant_type": "refresh_token", **CLIENT, "refresh_token": "sim-billit-refresh-0"})
    assert response.status_code == status
    if kind == "429":
        assert response.headers["Retry-After"] == "1"
    if kind in ("401", "404", "429"):
        assert (
            response.json()["errors"][0]["Code"]
            == {"401": "InvalidClient", "404": "NotFound", "429": "TooManyRequests"}[kind]
        )
    if kind in ("500", "503", "html"):
        assert response.headers["Content-Type"].startswith("text/html")
    if kind == "malformed":
        with pytest.raises(ValueError):
            response.json()
    assert sim.billit.current_refresh_token == "sim-billit-refresh-0"
    assert sim.billit.tokens_issued == 0
    assert refresh(sim, "sim-billit-refresh-0").status_code == 200


def test_slow_token_fault_trips_client_timeout(sim: Simulator) -> None:
    """A slow "token" fault delays /OAuth2/token past a short client timeout."""
    sim.faults.add("billit", "slow", count=1, delay=0.5, ref="token")
    with pytest.raises(requests.exceptions.ReadTimeout):
        refresh(sim, "sim-billit-refresh-0", timeout=0.2)


def test_slow_token_fault_answers_late_but_for_real(sim: Simulator) -> None:
    """A slow token call still rotates the refresh token, so a client that gave up holds a spent one."""
    sim.faults.add("billit", "slow", count=1, delay=0.05, ref="token")
    response = refresh(sim, "sim-billit-refresh-0")
    assert response.status_code == 200
    assert sim.billit.current_refresh_token == response.json()["refresh_token"]
    billit.assert_billit_error(refresh(sim, "sim-billit-refresh-0"), 400, "InvalidRefreshToken")


# ---- OAuth off, env --------------------------------------------------------------------


def test_env_gives_oauth_client_settings_when_on(sim: Simulator) -> None:
    """With billit_oauth the env has client id/secret and the current refresh token instead of the ApiKey."""
    env = {k: v for k, v in sim.env().items() if k.startswith("POLLER_BILLIT__")}
    assert env == {
        "POLLER_BILLIT__BASE_URL": sim.url,
        "POLLER_BILLIT__CLIENT_ID": "sim-billit-client",
        "POLLER_BILLIT__CLIENT_SECRET": "sim-billit-secret",
        "POLLER_BILLIT__REFRESH_TOKEN": "sim-billit-refresh-0",
        "POLLER_BILLIT__PARTY_ID": "1234",
    }
    assert "OAuth2: client_id=sim-billit-client" in sim.describe()


def test_custom_oauth_options() -> None:
    """Client, secret, refresh token and code come from options."""
    options = {
        "billit_oauth": True,
        "billit_client_id": "cid",
        "billit_client_secret": "csecret",
        "billit_refresh_token": "rt-start",
        "billit_auth_code": "code-1",
    }
    with common.running(options=options) as simulator:
        assert simulator.env()["POLLER_BILLIT__REFRESH_TOKEN"] == "rt-start"
        creds = {"client_id": "cid", "client_secret": "csecret"}
        ok = post_token(simulator, {"grant_type": "refresh_token", **creds, "refresh_token": "rt-start"})
        assert ok.status_code == 200 and ok.json()["expires_in"] == 3600
        code = {"grant_type": "authorization_code", **creds, "code": "code-1", "redirect_uri": "https://x/cb"}
        assert post_token(simulator, code).status_code == 200
        billit.assert_billit_error(refresh(simulator, simulator.billit.current_refresh_token), 401, "InvalidClient")


def test_oauth_off_is_an_api_key_only_account() -> None:
    """Without billit_oauth: ApiKey env lines, token endpoint 401 InvalidClient, bearer 401 Unauthorized."""
    config = SimulatorConfig(port=0, speed=0, seed_orders=1, options={"billit_oauth": "false"})
    with Simulator(config).start() as simulator:
        env = simulator.env()
        assert env["POLLER_BILLIT__API_KEY"] == "sim-billit-key"
        assert "POLLER_BILLIT__REFRESH_TOKEN" not in env and "POLLER_BILLIT__CLIENT_ID" not in env
        billit.assert_billit_error(refresh(simulator, "sim-billit-refresh-0"), 401, "InvalidClient")
        order_id = simulator.billit.orders()[0]["id"]
        billit.assert_billit_error(billit.get_order(simulator, order_id, bearer("anything")), 401, "Unauthorized")
        assert simulator.billit.tokens_issued == 0
