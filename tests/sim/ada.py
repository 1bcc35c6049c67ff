"""Requests and checks for the fake Amili Sweden (ADA) API: JWT login, Eve-style /cases."""

from __future__ import annotations

import json
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import jwt
import requests

from simulator import Simulator
from simulator.amili_ada import FakeAmiliAda
from tests.sim import common
from tests.sim.common import TIMEOUT

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


def ada_options(tmp_path: Path, **options: Any) -> dict[str, Any]:
    """No seeded cases, the generated key in ``tmp_path``, then ``options``."""
    return {"amili_ada_seed": 0, "amili_ada_key_dir": str(tmp_path / "keys"), **options}


def running(tmp_path: Path, **options: Any) -> AbstractContextManager[Simulator]:
    """A simulator with ``ada_options(tmp_path, **options)`` (see ``common.running``)."""
    return common.running(stage_seconds=STAGE, options=ada_options(tmp_path, **options))


def fake(sim: Simulator) -> FakeAmiliAda:
    provider: FakeAmiliAda = sim.amili_ada
    return provider


def login(sim: Simulator, signed: str | None = None) -> requests.Response:
    headers = {} if signed is None else {"X-API-Key": signed}
    return requests.get(f"{sim.url}/authenticates/api-code", headers=headers, timeout=TIMEOUT)


def token(sim: Simulator) -> str:
    response = login(sim, fake(sim).make_login_jwt())
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


def case_at(sim: Simulator, tok: str, case_id: str) -> dict[str, Any]:
    response = get(sim, f"/cases/{case_id}", tok)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body
