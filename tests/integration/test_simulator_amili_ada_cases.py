"""The fake Amili ADA (Sweden) API: Eve-style queries of /cases, GET /cases/{id} and case lives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from simulator import Simulator
from tests.sim import ada, common

sim = common.sim_fixture(stage_seconds=ada.STAGE, options=ada.ada_options)


def test_seeded_cases_and_describe(tmp_path: Path) -> None:
    """By default two cases are seeded, for INV-2025-015 (paid) and INV-2025-016 (cancelled)."""
    with common.running(options={"amili_ada_key_dir": str(tmp_path)}) as simulator:
        cases = ada.fake(simulator).cases()
        assert [(c["invoice_number"], c["scenario"]) for c in cases] == [
            ("INV-2025-015", "paid"),
            ("INV-2025-016", "cancelled"),
        ]
        text = "\n".join(ada.fake(simulator).describe_lines())
        assert "INV-2025-015" in text and ada.fake(simulator).private_key_path in text  # type: ignore[operator]
        assert "POLLER_AMILI_ADA__PRIVATE_KEY_FILE" in simulator.describe()


def test_where_on_dotted_invoice_number(sim: Simulator) -> None:
    """where={"debt.invoice_number": ...} finds exactly that case, with Eve's _items/_meta envelope."""
    first = ada.fake(sim).create_case()
    ada.fake(sim).create_case()
    tok = ada.token(sim)
    response = ada.find(sim, tok, {"debt.invoice_number": "INV-2025-015"})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["_items", "_meta"]
    assert body["_meta"] == {"page": 1, "max_results": 25, "total": 1}
    assert [item["_id"] for item in body["_items"]] == [first]
    assert ada.find(sim, tok, {"debt.invoice_number": "INV-1999-001"}).json() == {
        "_items": [],
        "_meta": {"page": 1, "max_results": 25, "total": 0},
    }


def test_where_on_top_level_fields_and_operators(sim: Simulator) -> None:
    """where matches top-level fields by equality, null, list members and $gt on RFC 1123 dates."""
    first = ada.fake(sim).create_case()
    sim.clock.advance(ada.STAGE)
    second = ada.fake(sim).create_case(scenario="cancelled")
    tok = ada.token(sim)

    def ids(where: dict[str, Any]) -> list[str]:
        response = ada.find(sim, tok, where)
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
    ada.fake(sim).create_case()
    ada.assert_eve_error(ada.get(sim, "/cases", ada.token(sim), params=params), 400)


def test_sort_and_pagination(sim: Simulator) -> None:
    """sort with "-" is descending; page/max_results slice; max_results above 100 is clamped to 100."""
    created = []
    for _ in range(3):
        created.append(ada.fake(sim).create_case())
        sim.clock.advance(1)
    tok = ada.token(sim)
    newest_first = ada.get(sim, "/cases", tok, params={"sort": "-_created"}).json()
    assert [item["_id"] for item in newest_first["_items"]] == created[::-1]
    by_ref = ada.get(sim, "/cases", tok, params={"sort": "reference_number"}).json()
    assert [item["_id"] for item in by_ref["_items"]] == created
    page2 = ada.get(sim, "/cases", tok, params={"sort": "-_created", "max_results": "1", "page": "2"}).json()
    assert [item["_id"] for item in page2["_items"]] == [created[1]]
    assert page2["_meta"] == {"page": 2, "max_results": 1, "total": 3}
    clamped = ada.get(sim, "/cases", tok, params={"max_results": "500"}).json()
    assert clamped["_meta"] == {"page": 1, "max_results": 100, "total": 3}
    beyond = ada.get(sim, "/cases", tok, params={"page": "9"}).json()
    assert beyond["_items"] == [] and beyond["_meta"]["total"] == 3


def test_projection_includes_or_excludes(sim: Simulator) -> None:
    """projection {"f": 1} keeps f plus Eve's meta fields; {"f": 0} drops f."""
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    included = ada.get(sim, "/cases", tok, params={"projection": '{"status": 1, "debt.invoice_number": 1}'}).json()
    assert included["_items"] == [
        {
            "_id": case_id,
            "_created": "Wed, 07 May 2025 14:00:00 GMT",
            "_etag": ada.fake(sim).case_body(case_id)["_etag"],
            "_updated": "Wed, 07 May 2025 14:00:00 GMT",
            "debt": {"invoice_number": "INV-2025-015"},
            "status": "initializing",
        }
    ]
    excluded = ada.get(sim, f"/cases/{case_id}", tok, params={"projection": '{"transactions": 0}'}).json()
    assert set(excluded) == ada.SEED_FIELDS - {"transactions"} | {"closed"}


def test_get_case_by_id_with_etag_and_conditional_get(sim: Simulator) -> None:
    """GET /cases/{id} sends ETag "<_etag>"; If-None-Match gives 304 until the case changes."""
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    response = ada.get(sim, f"/cases/{case_id}", tok)
    assert response.status_code == 200
    body = response.json()
    assert body["_id"] == case_id
    assert response.headers["ETag"] == f'"{body["_etag"]}"'
    assert response.headers["Last-Modified"] == body["_updated"]
    unchanged = ada.get(sim, f"/cases/{case_id}", tok, headers={"If-None-Match": response.headers["ETag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["ETag"] == response.headers["ETag"]
    sim.clock.advance(ada.STAGE)
    changed = ada.get(sim, f"/cases/{case_id}", tok, headers={"If-None-Match": response.headers["ETag"]})
    assert changed.status_code == 200
    assert changed.json()["_etag"] != body["_etag"]
    assert changed.headers["ETag"] == f'"{changed.json()["_etag"]}"'


def test_unknown_case_is_404(sim: Simulator) -> None:
    """An unknown case id answers 404 with Eve's error body."""
    tok = ada.token(sim)
    ada.assert_eve_error(ada.get(sim, "/cases/0123456789abcdef01234567", tok), 404)
    ada.assert_eve_error(ada.get(sim, "/cases/not-an-id", tok), 404)


def test_case_ids_are_deterministic_object_ids(tmp_path: Path) -> None:
    """Case ids are 24-hex ObjectIds, identical for identical histories."""
    ids = []
    for run in ("a", "b"):
        with ada.running(tmp_path / run) as simulator:
            ids.append([ada.fake(simulator).create_case(), ada.fake(simulator).create_case()])
    assert ids[0] == ids[1]
    assert all(ada.OBJECT_ID.match(case_id) for case_id in ids[0])
    assert ids[0][0] != ids[0][1]


def test_case_has_seed_field_set(sim: Simulator) -> None:
    """A case carries exactly seed 004's fields plus "closed", with seed 004's values at stage 0."""
    case_id = ada.fake(sim).create_case()
    body = ada.get(sim, f"/cases/{case_id}", ada.token(sim)).json()
    assert set(body) == ada.SEED_FIELDS | {"closed"}
    assert list(body)[:5] == ["_id", "invoice", "_created", "_etag", "_updated"]
    assert list(body)[-2:] == ["transactions", "reference_number"]
    assert set(body["debt"]) == ada.DEBT_FIELDS
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
    assert body["invoice"] == body["invoice_registration"] and ada.OBJECT_ID.match(body["invoice"])
    assert ada.OBJECT_ID.match(body["customer"])
    assert body["case_settings"] == {"interest_rate": {"reference_rate": True}}
    assert body["reference_number"] == "49477"
    for key in ("_created", "_updated", "latest_state_date"):
        assert ada.RFC1123.match(body[key])
    assert re.fullmatch(r"[0-9a-f]{32}", body["_etag"])


def _amounts(body: dict[str, Any]) -> dict[str, int]:
    # local_* must mirror total_* (SEK cases).
    for key in [k for k in body if k.startswith("total_")]:
        assert body["local_" + key.removeprefix("total_")] == body[key]
    return {k.removeprefix("total_").removesuffix("_amount"): v for k, v in body.items() if k.startswith("total_")}


def test_paid_life(sim: Simulator) -> None:
    """A "paid" case: initializing, invoice, debt_collection with costs, partial payment, then closed "paid"."""
    case_id = ada.fake(sim).create_case(invoice_number="INV-2025-015")
    tok = ada.token(sim)
    stages = []
    for stage in range(6):
        stages.append(ada.case_at(sim, tok, case_id))
        if stage < 5:
            sim.clock.advance(ada.STAGE)
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
    case_id = ada.fake(sim).create_case(scenario="cancelled")
    tok = ada.token(sim)
    s0 = ada.case_at(sim, tok, case_id)
    sim.clock.advance(ada.STAGE)
    s1 = ada.case_at(sim, tok, case_id)
    sim.clock.advance(ada.STAGE)
    s2 = ada.case_at(sim, tok, case_id)
    sim.clock.advance(ada.STAGE * 5)
    assert s0["state"] == "initializing" and s0["closed"] is None
    assert (s1["state"], s1["status"], s1["closed"]) == ("invoice", "initialized", None)
    assert s2["closed"] == {"date": "Wed, 07 May 2025 14:00:20 GMT", "reason": "cancelled"}
    assert [h["state"] for h in s2["state_history"]] == ["initializing", "invoice", s2["state"]]
    assert _amounts(s2)["remaining_transaction"] == 0
    assert _amounts(s2)["added_costs"] == 0
    assert ada.case_at(sim, tok, case_id) == s2


def test_repeated_gets_in_a_stage_are_byte_identical(sim: Simulator) -> None:
    """Within one stage the case and the list answer the same bytes every time."""
    case_id = ada.fake(sim).create_case()
    tok = ada.token(sim)
    sim.clock.advance(ada.STAGE * 2 + 3)
    assert len({ada.get(sim, f"/cases/{case_id}", tok).content for _ in range(3)}) == 1
    assert len({ada.find(sim, tok, {"_id": case_id}).content for _ in range(3)}) == 1
