"""The Amili ADA (Sweden) fake over real loopback HTTP: JWT login, Eve-style /cases, case lives, faults, admin."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from simulator import Simulator, SimulatorConfig
from simulator.amili_ada import FakeAmiliAda

TIMEOUT = 5
STAGE = 10.0
RFC1123 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
# Seed 004's example case, field for field, plus "closed".
SEED_FIELDS = {
    "_id", "invoice", "_created", "_etag", "_updated", "account", "agreement_version", "case_settings",
    "creditor", "creditor_name", "currency", "customer", "customer_id_number", "customer_name",
    "customer_number", "customer_status", "debt", "invoice_registration", "latest_state_date",
    "local_added_capital_amount", "local_added_costs_amount", "local_added_interest_amount",
    "local_added_transaction_amount", "local_remaining_capital_amount", "local_remaining_costs_amount",
    "local_remaining_interest_amount", "local_remaining_transaction_amount", "state", "state_history", "status",
    "status_history", "total_added_capital_amount", "total_added_costs_amount", "total_added_interest_amount",
    "total_added_transaction_amount", "total_remaining_capital_amount", "total_remaining_costs_amount",
    "total_remaining_interest_amount", "total_remaining_transaction_amount", "transactions", "reference_number",
}  # fmt: skip
DEBT_FIELDS = {
    "invoice_number", "invoice_date", "invoice_due_days_after_invoice_date", "interest_days_after_invoice_date",
    "initial_capital", "capital_to_claim", "debt_description", "payout_reference",
}  # fmt: skip


def make_sim(tmp_path: Path, **options: Any) -> Simulator:
    opts: dict[str, Any] = {"amili_ada_seed": 0, "amili_ada_key_dir": str(tmp_path / "keys")}
    opts.update(options)
    return Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, stage_seconds=STAGE, options=opts)).start()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    """A frozen-clock simulator with no ADA cases and its generated key in tmp_path."""
    simulator = make_sim(tmp_path)
    try:
        yield simulator
    finally:
        simulator.stop()


def ada(sim: Simulator) -> FakeAmiliAda:
    provider: FakeAmiliAda = sim.amili_ada
    return provider


def login(sim: Simulator, signed: str | None = None) -> requests.Response:
    headers = {} if signed is None else {"X-API-Key": signed}
    return requests.get(f"{sim.url}/authenticates/api-code", headers=headers, timeout=TIMEOUT)


def token(sim: Simulator) -> str:
    response = login(sim, ada(sim).make_login_jwt())
    assert response.status_code == 200, response.text
    value: str = response.json()["token"]
    return value


def get(sim: Simulator, path: str, tok: str | None, **kwargs: Any) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if tok is not None:
        headers["X-API-Key"] = tok
    return requests.get(f"{sim.url}{path}", headers=headers, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


def find(sim: Simulator, tok: str, where: dict[str, Any], **params: Any) -> requests.Response:
    return get(sim, "/cases", tok, params={"where": json.dumps(where), **params})


def assert_eve_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["_status"] == "ERR"
    assert body["_error"]["code"] == status
    assert isinstance(body["_error"]["message"], str) and body["_error"]["message"]


def sign(claims: dict[str, Any], key: Any, algorithm: str) -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


# ---- login --------------------------------------------------------------------


def test_login_with_signed_jwt_returns_token_and_rfc1123_expiry(tmp_path: Path) -> None:
    """GET /authenticates/api-code with a good JWT answers {"token", "expires"}, expiry = now + TTL."""
    simulator = Simulator(
        SimulatorConfig(
            port=0, speed=0, seed_orders=0, token_ttl_seconds=120, options={"amili_ada_key_dir": str(tmp_path)}
        )
    ).start()
    try:
        before = time.time()
        response = login(simulator, ada(simulator).make_login_jwt())
        assert response.status_code == 200
        body = response.json()
        assert list(body) == ["token", "expires"]
        assert isinstance(body["token"], str) and len(body["token"]) >= 32
        assert RFC1123.match(body["expires"])
        expires = parsedate_to_datetime(body["expires"]).timestamp()
        assert before + 120 - 2 <= expires <= time.time() + 120 + 1
        assert ada(simulator).tokens_issued == 1
    finally:
        simulator.stop()


def test_login_with_api_code_body(sim: Simulator) -> None:
    """POST /authenticates/api-code with {"api_code"} (static-IP method) returns a working token."""
    response = requests.post(
        f"{sim.url}/authenticates/api-code", json={"api_code": "sim-ada-api-code"}, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert get(sim, "/cases", response.json()["token"]).status_code == 200
    wrong = requests.post(f"{sim.url}/authenticates/api-code", json={"api_code": "nope"}, timeout=TIMEOUT)
    assert_eve_error(wrong, 401)
    empty = requests.post(f"{sim.url}/authenticates/api-code", json={}, timeout=TIMEOUT)
    assert_eve_error(empty, 400)


def _bad_login_jwts(provider: FakeAmiliAda) -> dict[str, tuple[str | None, int]]:
    now = int(time.time())
    other = ec.generate_private_key(ec.SECP521R1())
    key = provider.private_key_pem
    assert key is not None
    return {
        "missing": (None, 401),
        "garbage": ("not-a-jwt", 401),
        "wrong-key": (sign({"api_code": provider.api_code, "exp": now + 600}, other, "ES512"), 401),
        "hs256": (sign({"api_code": provider.api_code, "exp": now + 600}, "s" * 32, "HS256"), 401),
        "wrong-api-code": (sign({"api_code": "other", "exp": now + 600}, key, "ES512"), 401),
        "expired": (sign({"api_code": provider.api_code, "exp": now - 5}, key, "ES512"), 401),
        "too-far-ahead": (sign({"api_code": provider.api_code, "exp": now + 16 * 60}, key, "ES512"), 400),
        "no-exp": (sign({"api_code": provider.api_code}, key, "ES512"), 400),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case", ["missing", "garbage", "wrong-key", "hs256", "wrong-api-code", "expired", "too-far-ahead", "no-exp"]
)
def test_login_rejections(sim: Simulator, case: str) -> None:
    """Bad login JWTs get Eve errors: 401 for bad credentials or expired, 400 for a malformed exp."""
    signed, status = _bad_login_jwts(ada(sim))[case]
    assert_eve_error(login(sim, signed), status)
    assert ada(sim).tokens_issued == 0


def test_env_points_at_a_usable_private_key_file(sim: Simulator) -> None:
    """env() names the key file and algorithm; a JWT signed from that file logs in."""
    env = ada(sim).env(sim.url)
    assert set(env) == {
        "POLLER_AMILI_ADA__BASE_URL",
        "POLLER_AMILI_ADA__API_CODE",
        "POLLER_AMILI_ADA__ALGORITHM",
        "POLLER_AMILI_ADA__PRIVATE_KEY_FILE",
    }
    assert env["POLLER_AMILI_ADA__BASE_URL"] == sim.url
    assert env["POLLER_AMILI_ADA__ALGORITHM"] == "ES512"
    pem = Path(env["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"]).read_text()
    assert pem == ada(sim).private_key_pem
    assert ada(sim).public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    signed = sign({"api_code": env["POLLER_AMILI_ADA__API_CODE"], "exp": int(time.time()) + 600}, pem, "ES512")
    assert login(sim, signed).status_code == 200
    assert sim.env()["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"] == env["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"]


def test_generated_key_goes_to_a_temp_dir_by_default() -> None:
    """Without amili_ada_key_dir the generated key is written to a fresh temp dir."""
    simulator = Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0)).start()
    try:
        path = ada(simulator).private_key_path
        assert path is not None and Path(path).read_text() == ada(simulator).private_key_pem
        assert Path(path).stat().st_mode & 0o077 == 0
    finally:
        simulator.stop()


def test_configured_rsa_public_key(tmp_path: Path) -> None:
    """With amili_ada_public_key_pem set, JWTs signed by its private key (RS256) log in; env has no key file."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    simulator = make_sim(tmp_path, amili_ada_public_key_pem=public_pem, amili_ada_api_code="my-code")
    try:
        provider = ada(simulator)
        assert provider.private_key_pem is None and provider.private_key_path is None
        assert provider.env(simulator.url) == {
            "POLLER_AMILI_ADA__BASE_URL": simulator.url,
            "POLLER_AMILI_ADA__API_CODE": "my-code",
        }
        signed = sign({"api_code": "my-code", "exp": int(time.time()) + 600}, private, "RS256")
        assert login(simulator, signed).status_code == 200
        assert not (tmp_path / "keys").exists()
    finally:
        simulator.stop()


# ---- access token -------------------------------------------------------------


def test_cases_need_a_valid_access_token(sim: Simulator) -> None:
    """Missing or unknown X-API-Key on /cases gets 401; the login JWT itself is not an access token."""
    case_id = ada(sim).create_case()
    assert_eve_error(get(sim, "/cases", None), 401)
    assert_eve_error(get(sim, f"/cases/{case_id}", "made-up"), 401)
    assert_eve_error(get(sim, "/cases", ada(sim).make_login_jwt()), 401)


def test_token_is_reused_across_calls(sim: Simulator) -> None:
    """One access token serves many calls; only one was issued."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    for _ in range(3):
        assert get(sim, f"/cases/{case_id}", tok).status_code == 200
    assert ada(sim).tokens_issued == 1


def test_expire_tokens_makes_calls_401_until_new_login(sim: Simulator) -> None:
    """expire_tokens() (and the admin route) turn live tokens into 401; a fresh login works."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    assert ada(sim).expire_tokens() == 1
    assert_eve_error(get(sim, f"/cases/{case_id}", tok), 401)
    fresh = token(sim)
    assert get(sim, f"/cases/{case_id}", fresh).status_code == 200
    expired = requests.post(f"{sim.url}/_sim/amili_ada/tokens/expire", timeout=TIMEOUT)
    assert expired.status_code == 200 and expired.json() == {"expired": 1, "tokens_issued": 2}
    assert_eve_error(get(sim, f"/cases/{case_id}", fresh), 401)


def test_token_expires_after_ttl_in_real_time(tmp_path: Path) -> None:
    """Once wall time passes token_ttl_seconds the token gets 401 "expired"."""
    simulator = Simulator(
        SimulatorConfig(
            port=0, speed=0, seed_orders=0, token_ttl_seconds=30, options={"amili_ada_key_dir": str(tmp_path)}
        )
    ).start()
    try:
        tok = token(simulator)
        assert get(simulator, "/cases", tok).status_code == 200
        ada(simulator).wall_time = lambda: time.time() + 31
        response = get(simulator, "/cases", tok)
        assert_eve_error(response, 401)
        assert "expired" in response.json()["_error"]["message"]
    finally:
        simulator.stop()


# ---- Eve query interface ------------------------------------------------------


def test_seeded_cases_and_describe(tmp_path: Path) -> None:
    """By default two cases are seeded, for INV-2025-015 (paid) and INV-2025-016 (cancelled)."""
    simulator = Simulator(
        SimulatorConfig(port=0, speed=0, seed_orders=0, options={"amili_ada_key_dir": str(tmp_path)})
    ).start()
    try:
        cases = ada(simulator).cases()
        assert [(c["invoice_number"], c["scenario"]) for c in cases] == [
            ("INV-2025-015", "paid"),
            ("INV-2025-016", "cancelled"),
        ]
        text = "\n".join(ada(simulator).describe_lines())
        assert "INV-2025-015" in text and ada(simulator).private_key_path in text  # type: ignore[operator]
        assert "POLLER_AMILI_ADA__PRIVATE_KEY_FILE" in simulator.describe()
    finally:
        simulator.stop()


def test_where_on_dotted_invoice_number(sim: Simulator) -> None:
    """where={"debt.invoice_number": ...} finds exactly that case, with Eve's _items/_meta envelope."""
    first = ada(sim).create_case()
    ada(sim).create_case()
    tok = token(sim)
    response = find(sim, tok, {"debt.invoice_number": "INV-2025-015"})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["_items", "_meta"]
    assert body["_meta"] == {"page": 1, "max_results": 25, "total": 1}
    assert [item["_id"] for item in body["_items"]] == [first]
    assert find(sim, tok, {"debt.invoice_number": "INV-1999-001"}).json() == {
        "_items": [],
        "_meta": {"page": 1, "max_results": 25, "total": 0},
    }


def test_where_on_top_level_fields_and_operators(sim: Simulator) -> None:
    """where matches top-level fields by equality, null, list members and $gt on RFC 1123 dates."""
    first = ada(sim).create_case()
    sim.clock.advance(STAGE)
    second = ada(sim).create_case(scenario="cancelled")
    tok = token(sim)

    def ids(where: dict[str, Any]) -> list[str]:
        response = find(sim, tok, where)
        assert response.status_code == 200, response.text
        return [item["_id"] for item in response.json()["_items"]]

    assert ids({"status": "initialized"}) == [first]
    assert ids({"state": "initializing", "customer_status": "initialized"}) == [second]
    assert ids({"closed": None}) == [first, second]
    assert ids({"state_history.state": "invoice"}) == [first]
    assert ids({"_created": {"$gt": "Wed, 07 May 2025 14:00:05 GMT"}}) == [second]
    assert ids({"_id": {"$in": [second]}}) == [second]


@pytest.mark.parametrize(
    "params",
    [
        {"where": "{not json"},
        {"where": "[1, 2]"},
        {"where": '{"status": {"$regex": "x"}}'},
        {"page": "0"},
        {"max_results": "many"},
        {"sort": '[("_created", -1)]'},
        {"projection": '{"status": 2}'},
    ],
)
def test_bad_query_parameters_are_400(sim: Simulator, params: dict[str, str]) -> None:
    """Unparsable where/sort/projection or bad paging answer 400 with Eve's error body."""
    ada(sim).create_case()
    assert_eve_error(get(sim, "/cases", token(sim), params=params), 400)


def test_sort_and_pagination(sim: Simulator) -> None:
    """sort with "-" is descending; page/max_results slice; max_results above 100 is clamped to 100."""
    created = []
    for _ in range(3):
        created.append(ada(sim).create_case())
        sim.clock.advance(1)
    tok = token(sim)
    newest_first = get(sim, "/cases", tok, params={"sort": "-_created"}).json()
    assert [item["_id"] for item in newest_first["_items"]] == created[::-1]
    by_ref = get(sim, "/cases", tok, params={"sort": "reference_number"}).json()
    assert [item["_id"] for item in by_ref["_items"]] == created
    page2 = get(sim, "/cases", tok, params={"sort": "-_created", "max_results": "1", "page": "2"}).json()
    assert [item["_id"] for item in page2["_items"]] == [created[1]]
    assert page2["_meta"] == {"page": 2, "max_results": 1, "total": 3}
    clamped = get(sim, "/cases", tok, params={"max_results": "500"}).json()
    assert clamped["_meta"] == {"page": 1, "max_results": 100, "total": 3}
    beyond = get(sim, "/cases", tok, params={"page": "9"}).json()
    assert beyond["_items"] == [] and beyond["_meta"]["total"] == 3


def test_projection_includes_or_excludes(sim: Simulator) -> None:
    """projection {"f": 1} keeps f plus Eve's meta fields; {"f": 0} drops f."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    included = get(sim, "/cases", tok, params={"projection": '{"status": 1, "debt.invoice_number": 1}'}).json()
    assert included["_items"] == [
        {
            "_id": case_id,
            "_created": "Wed, 07 May 2025 14:00:00 GMT",
            "_etag": ada(sim).case_body(case_id)["_etag"],
            "_updated": "Wed, 07 May 2025 14:00:00 GMT",
            "debt": {"invoice_number": "INV-2025-015"},
            "status": "initializing",
        }
    ]
    excluded = get(sim, f"/cases/{case_id}", tok, params={"projection": '{"transactions": 0}'}).json()
    assert set(excluded) == SEED_FIELDS - {"transactions"} | {"closed"}


# ---- GET /cases/{id} ------------------------------------------------------------


def test_get_case_by_id_with_etag_and_conditional_get(sim: Simulator) -> None:
    """GET /cases/{id} sends ETag "<_etag>"; If-None-Match gives 304 until the case changes."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    response = get(sim, f"/cases/{case_id}", tok)
    assert response.status_code == 200
    body = response.json()
    assert body["_id"] == case_id
    assert response.headers["ETag"] == f'"{body["_etag"]}"'
    assert response.headers["Last-Modified"] == body["_updated"]
    unchanged = get(sim, f"/cases/{case_id}", tok, headers={"If-None-Match": response.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["ETag"] == response.headers["ETag"]
    sim.clock.advance(STAGE)
    changed = get(sim, f"/cases/{case_id}", tok, headers={"If-None-Match": response.headers["ETag"]})
    assert changed.status_code == 200
    assert changed.json()["_etag"] != body["_etag"]
    assert changed.headers["ETag"] == f'"{changed.json()["_etag"]}"'


def test_unknown_case_is_404(sim: Simulator) -> None:
    """An unknown case id answers 404 with Eve's error body."""
    tok = token(sim)
    assert_eve_error(get(sim, "/cases/0123456789abcdef01234567", tok), 404)
    assert_eve_error(get(sim, "/cases/not-an-id", tok), 404)


def test_case_ids_are_deterministic_object_ids(tmp_path: Path) -> None:
    """Case ids are 24-hex ObjectIds, identical for identical histories."""
    ids = []
    for run in ("a", "b"):
        simulator = make_sim(tmp_path / run)
        try:
            ids.append([ada(simulator).create_case(), ada(simulator).create_case()])
        finally:
            simulator.stop()
    assert ids[0] == ids[1]
    assert all(OBJECT_ID.match(case_id) for case_id in ids[0])
    assert ids[0][0] != ids[0][1]


# ---- case lives -------------------------------------------------------------------


def test_case_has_seed_field_set(sim: Simulator) -> None:
    """A case carries exactly seed 004's fields plus "closed", with seed 004's values at stage 0."""
    case_id = ada(sim).create_case()
    body = get(sim, f"/cases/{case_id}", token(sim)).json()
    assert set(body) == SEED_FIELDS | {"closed"}
    assert list(body)[:5] == ["_id", "invoice", "_created", "_etag", "_updated"]
    assert list(body)[-2:] == ["transactions", "reference_number"]
    assert set(body["debt"]) == DEBT_FIELDS
    assert body["closed"] is None
    assert (body["account"], body["creditor"], body["creditor_name"], body["currency"]) == (
        "674dbeaf08847b9501cc9132",
        "674dbeb208847b9501cc9138",
        "Amili Integration Team",
        "SEK",
    )
    assert (body["customer_name"], body["customer_id_number"], body["customer_number"]) == (
        "Jane Smith",
        "556789-1234",
        "12345",
    )
    assert body["invoice"] == body["invoice_registration"] and OBJECT_ID.match(body["invoice"])
    assert OBJECT_ID.match(body["customer"])
    assert body["case_settings"] == {"interest_rate": {"reference_rate": True}}
    assert body["reference_number"] == "49477"
    for key in ("_created", "_updated", "latest_state_date"):
        assert RFC1123.match(body[key])
    assert re.fullmatch(r"[0-9a-f]{32}", body["_etag"])


def _at(sim: Simulator, tok: str, case_id: str) -> dict[str, Any]:
    response = get(sim, f"/cases/{case_id}", tok)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _amounts(body: dict[str, Any]) -> dict[str, int]:
    # local_* must mirror total_* (SEK cases).
    for key in [k for k in body if k.startswith("total_")]:
        assert body["local_" + key.removeprefix("total_")] == body[key]
    return {k.removeprefix("total_").removesuffix("_amount"): v for k, v in body.items() if k.startswith("total_")}


def test_paid_life(sim: Simulator) -> None:
    """A "paid" case: initializing, invoice, debt_collection with costs, partial payment, then closed "paid"."""
    case_id = ada(sim).create_case(invoice_number="INV-2025-015")
    tok = token(sim)
    stages = []
    for stage in range(6):
        stages.append(_at(sim, tok, case_id))
        if stage < 5:
            sim.clock.advance(STAGE)
    s0, s1, s2, s3, s4, after = stages

    assert (s0["state"], s0["status"], s0["customer_status"]) == ("initializing", "initializing", "initialized")
    assert _amounts(s0) == {
        "added_capital": 500, "added_costs": 0, "added_interest": 0, "added_transaction": 500,
        "remaining_capital": 500, "remaining_costs": 0, "remaining_interest": 0, "remaining_transaction": 500,
    }  # fmt: skip
    assert s0["transactions"] == [
        {
            "bank_transaction_date": "Wed, 07 May 2025 00:00:00 GMT",
            "registration_date": "Wed, 07 May 2025 14:00:00 GMT",
            "origin": "creditor_system",
            "type": "capital",
            "description_locale_tag": "api.transaction.case_registration",
            "amount": 500,
        }
    ]

    assert (s1["state"], s1["status"]) == ("invoice", "initialized")
    assert s1["state_history"] == [
        {"state": "initializing", "state_date": "Wed, 07 May 2025 14:00:00 GMT"},
        {"state": "invoice", "state_date": "Wed, 07 May 2025 14:00:10 GMT"},
    ]
    assert s1["status_history"][-1] == {"status": "initialized", "status_date": "Wed, 07 May 2025 14:00:10 GMT"}
    assert s1["latest_state_date"] == s1["_updated"] == "Wed, 07 May 2025 14:00:10 GMT"
    assert s1["_created"] == s0["_created"]

    assert (s2["state"], s2["status"]) == ("debt_collection", "debt_collection_active")
    assert _amounts(s2)["added_costs"] == 60 and _amounts(s2)["remaining_costs"] == 60
    assert _amounts(s2)["remaining_transaction"] == 560
    assert len(s2["state_history"]) == 3 and len(s2["status_history"]) == 3

    assert (s3["state"], s3["status"]) == ("debt_collection", "debt_collection_active")
    assert _amounts(s3)["remaining_capital"] == 250 and _amounts(s3)["remaining_transaction"] == 310
    assert len(s3["transactions"]) == 2 and s3["transactions"][1]["amount"] == -250
    # No state change at stage 3: the history and latest_state_date stand still, _updated moves.
    assert s3["state_history"] == s2["state_history"] and s3["latest_state_date"] == s2["latest_state_date"]
    assert s3["_updated"] == "Wed, 07 May 2025 14:00:30 GMT"

    assert s4["closed"] == {"date": "Wed, 07 May 2025 14:00:40 GMT", "reason": "paid"}
    amounts = _amounts(s4)
    assert all(amounts[k] == 0 for k in amounts if k.startswith("remaining_"))
    assert len(s4["transactions"]) == 3 and s4["transactions"][2]["amount"] == -310
    assert s4["state_history"][-1]["state_date"] == s4["latest_state_date"]
    assert all(stage["closed"] is None for stage in (s0, s1, s2, s3))
    assert len({stage["_etag"] for stage in (s0, s1, s2, s3, s4)}) == 5
    assert after == s4


def test_cancelled_life(sim: Simulator) -> None:
    """A "cancelled" case: initializing, invoice, then closed with reason "cancelled"."""
    case_id = ada(sim).create_case(scenario="cancelled")
    tok = token(sim)
    s0 = _at(sim, tok, case_id)
    sim.clock.advance(STAGE)
    s1 = _at(sim, tok, case_id)
    sim.clock.advance(STAGE)
    s2 = _at(sim, tok, case_id)
    sim.clock.advance(STAGE * 5)
    assert s0["state"] == "initializing" and s0["closed"] is None
    assert (s1["state"], s1["status"], s1["closed"]) == ("invoice", "initialized", None)
    assert s2["closed"] == {"date": "Wed, 07 May 2025 14:00:20 GMT", "reason": "cancelled"}
    assert [h["state"] for h in s2["state_history"]] == ["initializing", "invoice", s2["state"]]
    assert _amounts(s2)["remaining_transaction"] == 0
    assert _amounts(s2)["added_costs"] == 0
    assert _at(sim, tok, case_id) == s2


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator) -> None:
    """Within one stage the case and the list answer the same bytes every time."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    sim.clock.advance(STAGE * 2 + 3)
    assert len({get(sim, f"/cases/{case_id}", tok).content for _ in range(3)}) == 1
    assert len({find(sim, tok, {"_id": case_id}).content for _ in range(3)}) == 1


# ---- faults -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503"])
def test_fault_5xx_is_html(sim: Simulator, kind: str) -> None:
    """ "500"/"503" faults answer that status with an HTML page."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    sim.faults.add("amili_ada", kind, count=1)
    response = get(sim, f"/cases/{case_id}", tok)
    assert response.status_code == int(kind)
    assert response.headers["Content-Type"].startswith("text/html")
    assert get(sim, f"/cases/{case_id}", tok).status_code == 200


def test_fault_429_has_retry_after(sim: Simulator) -> None:
    """A "429" fault answers Eve's error body with Retry-After."""
    tok = token(sim)
    sim.faults.add("amili_ada", "429", retry_after=7, count=1)
    response = find(sim, tok, {"debt.invoice_number": "INV-2025-015"})
    assert_eve_error(response, 429)
    assert response.headers["Retry-After"] == "7"


def test_fault_slow_trips_client_timeout(sim: Simulator) -> None:
    """A "slow" fault delays the answer past a short client timeout."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    sim.faults.add("amili_ada", "slow", delay=0.5, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(sim, f"/cases/{case_id}", tok, timeout=0.2)
    assert get(sim, f"/cases/{case_id}", tok, timeout=0.2).status_code == 200


def test_fault_malformed_and_html(sim: Simulator) -> None:
    """ "malformed" gives 200 JSON that does not parse; "html" gives a 200 HTML page."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    sim.faults.add("amili_ada", "malformed", count=1)
    response = get(sim, f"/cases/{case_id}", tok)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    sim.faults.add("amili_ada", "html", count=1)
    response = get(sim, f"/cases/{case_id}", tok)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")


def test_fault_404_and_401_use_eve_bodies(sim: Simulator) -> None:
    """ "404" and "401" faults answer Eve error bodies even for a valid case and token."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    sim.faults.add("amili_ada", "404", count=1)
    sim.faults.add("amili_ada", "401", count=1)
    assert_eve_error(get(sim, f"/cases/{case_id}", tok), 404)
    assert_eve_error(get(sim, f"/cases/{case_id}", tok), 401)
    assert get(sim, f"/cases/{case_id}", tok).status_code == 200


def test_faults_apply_after_auth_and_not_to_login(sim: Simulator) -> None:
    """An unscoped fault spares the login and bad-token calls, and hits the next authenticated call."""
    case_id = ada(sim).create_case()
    sim.faults.add("amili_ada", "500", count=1)
    tok = token(sim)
    assert get(sim, f"/cases/{case_id}", "bad").status_code == 401
    assert get(sim, f"/cases/{case_id}", tok).status_code == 500


def test_token_fault_fails_only_the_login(sim: Simulator) -> None:
    """A fault with ref "token" breaks the login endpoint and leaves /cases alone."""
    case_id = ada(sim).create_case()
    tok = token(sim)
    sim.faults.add("amili_ada", "503", ref="token", count=1)
    assert get(sim, f"/cases/{case_id}", tok).status_code == 200
    assert login(sim, ada(sim).make_login_jwt()).status_code == 503
    assert login(sim, ada(sim).make_login_jwt()).status_code == 200


def test_fault_scoped_to_invoice_number_hits_either_lookup(sim: Simulator) -> None:
    """A fault scoped to an invoice number or case id hits both GET /cases/{id} and the where query."""
    first = ada(sim).create_case()
    second = ada(sim).create_case()
    tok = token(sim)
    sim.faults.add("amili_ada", "500", ref="INV-2025-015")
    assert get(sim, f"/cases/{first}", tok).status_code == 500
    assert find(sim, tok, {"debt.invoice_number": "INV-2025-015"}).status_code == 500
    assert get(sim, f"/cases/{second}", tok).status_code == 200
    sim.faults.clear("amili_ada")
    sim.faults.add("amili_ada", "404", ref=second)
    assert find(sim, tok, {"debt.invoice_number": "INV-2025-016"}).status_code == 404
    assert find(sim, tok, {"debt.invoice_number": "INV-2025-015"}).status_code == 200


# ---- admin --------------------------------------------------------------------------


def test_admin_create_list_stage_and_keys(sim: Simulator) -> None:
    """The admin routes create and list cases, jump a stage, and show the keys."""
    created = requests.post(
        f"{sim.url}/_sim/amili_ada/cases", json={"invoice_number": "INV-X-1", "scenario": "cancelled"}, timeout=TIMEOUT
    )
    assert created.status_code == 201
    case_id = created.json()["_id"]
    assert created.json() == {"_id": case_id, "invoice_number": "INV-X-1", "scenario": "cancelled"}
    auto = requests.post(f"{sim.url}/_sim/amili_ada/cases", json={}, timeout=TIMEOUT).json()
    assert auto["invoice_number"] == "INV-2025-015" and auto["scenario"] == "paid"
    staged = requests.post(f"{sim.url}/_sim/amili_ada/cases/{case_id}/stage", json={"stage": 2}, timeout=TIMEOUT)
    assert staged.json() == {"_id": case_id, "stage": 2}
    listed = requests.get(f"{sim.url}/_sim/amili_ada/cases", timeout=TIMEOUT).json()["cases"]
    assert [(c["_id"], c["stage"], c["final_stage"]) for c in listed] == [(case_id, 2, 2), (auto["_id"], 0, 4)]
    assert _at(sim, token(sim), case_id)["closed"]["reason"] == "cancelled"
    keys = requests.get(f"{sim.url}/_sim/amili_ada/keys", timeout=TIMEOUT).json()
    assert keys["algorithm"] == "ES512" and keys["private_key_pem"] == ada(sim).private_key_pem


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
    response = requests.post(f"{sim.url}{path}", json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]


def test_admin_duplicate_invoice_and_bad_stage(sim: Simulator) -> None:
    """A duplicate invoice number or an out-of-range stage answers 400; an unknown case 404."""
    case_id = ada(sim).create_case("INV-DUP")
    dup = requests.post(f"{sim.url}/_sim/amili_ada/cases", json={"invoice_number": "INV-DUP"}, timeout=TIMEOUT)
    assert dup.status_code == 400 and "already exists" in dup.json()["error"]
    bad = requests.post(f"{sim.url}/_sim/amili_ada/cases/{case_id}/stage", json={"stage": 9}, timeout=TIMEOUT)
    assert bad.status_code == 400
    missing = requests.post(f"{sim.url}/_sim/amili_ada/cases/nope/stage", json={"stage": 1}, timeout=TIMEOUT)
    assert missing.status_code == 404
