"""The fake Amili Distribution pstatus API over real loopback HTTP: request bodies, auth and invoice lives."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from simulator import Simulator
from tests.sim import common, distribution

sim = common.sim_fixture(stage_seconds=distribution.STAGE, options={"amili_distribution_seed": 0})
token_sim = common.sim_fixture(
    stage_seconds=distribution.STAGE,
    options={"amili_distribution_seed": 0, "amili_distribution_token": distribution.TOKEN},
)


@pytest.mark.parametrize(
    "body",
    [
        {"Identifier": "INV-A"},
        {"InvoiceNo": "9001"},
        {"InvoiceNo": 9001},
        {"Invoice": {"Identifier": "INV-A"}},
        {"Invoice": {"InvoiceNo": "9001"}},
        {"identifier": "INV-A"},
        {"invoice": {"invoiceNo": "9001"}},
        {"Identifier": "unknown", "InvoiceNo": "9001"},
    ],
    ids=["identifier", "invoiceno", "invoiceno-int", "nested-id", "nested-no", "lowercase", "nested-lower", "both"],
)
def test_body_forms_find_the_invoice(sim: Simulator, body: dict[str, Any]) -> None:
    """Identifier or InvoiceNo, top level or inside "Invoice", any key case, all find the invoice."""
    assert distribution.dist(sim).create_invoice("INV-A", "9001") == "INV-A"
    distribution.dist(sim).create_invoice("INV-B", "9002")
    response = distribution.pstatus(sim, body)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert list(response.json()) == distribution.TOP_KEYS


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"", None),
        (b"{not json", None),
        (None, [1, 2]),
        (None, {}),
        (None, {"Reference": "x"}),
        (None, {"Identifier": {"x": 1}}),
        (None, {"Identifier": "  "}),
    ],
    ids=["empty", "not-json", "array", "sample-empty-object", "no-known-key", "object-id", "blank-id"],
)
def test_bad_bodies_are_400(sim: Simulator, data: bytes | None, body: Any) -> None:
    """A body without a usable Identifier/InvoiceNo answers 400 {"Message"}."""
    distribution.dist(sim).create_invoice()
    headers = {"Content-Type": "application/json"}
    distribution.assert_message(distribution.pstatus(sim, body, data=data, headers=headers), 400)


def test_unknown_invoice_is_404(sim: Simulator) -> None:
    """An unknown invoice answers 404 {"Message": "Invoice not found"}."""
    distribution.assert_message(distribution.pstatus(sim, {"Identifier": "nope"}), 404, "Invoice not found")
    distribution.assert_message(distribution.pstatus(sim, {"InvoiceNo": "0"}), 404, "Invoice not found")


def test_no_auth_by_default(sim: Simulator) -> None:
    """Without amili_distribution_token the endpoint needs no Authorization; env has only the base URL."""
    identifier = distribution.dist(sim).create_invoice()
    assert distribution.pstatus(sim, {"Identifier": identifier}).status_code == 200
    assert distribution.dist(sim).env(sim.url) == {"POLLER_AMILI_DISTRIBUTION__BASE_URL": sim.url}


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer wrong"},
        {"Authorization": distribution.TOKEN},
        {"Authorization": f"Basic {distribution.TOKEN}"},
    ],
    ids=["missing", "wrong-token", "no-scheme", "basic"],
)
def test_token_required_when_configured(token_sim: Simulator, headers: dict[str, str] | None) -> None:
    """With a token configured, a missing or wrong bearer token gets 401 with ASP.NET's message."""
    identifier = distribution.dist(token_sim).create_invoice()
    response = distribution.pstatus(token_sim, {"Identifier": identifier}, headers=headers)
    distribution.assert_message(response, 401, "Authorization has been denied for this request.")


def test_token_accepted_and_in_env(token_sim: Simulator) -> None:
    """The configured bearer token is accepted and exported; expire_tokens() is a no-op."""
    identifier = distribution.dist(token_sim).create_invoice()
    auth = {"Authorization": f"Bearer {distribution.TOKEN}"}
    assert distribution.pstatus(token_sim, {"Identifier": identifier}, headers=auth).status_code == 200
    assert distribution.dist(token_sim).env(token_sim.url) == {
        "POLLER_AMILI_DISTRIBUTION__BASE_URL": token_sim.url,
        "POLLER_AMILI_DISTRIBUTION__TOKEN": distribution.TOKEN,
    }
    assert distribution.dist(token_sim).expire_tokens() == 0
    expired = requests.post(f"{token_sim.url}/_sim/amili_distribution/tokens/expire", timeout=common.TIMEOUT)
    assert expired.json() == {"expired": 0, "tokens_issued": 0}
    assert distribution.pstatus(token_sim, {"Identifier": identifier}, headers=auth).status_code == 200


def test_faults_apply_after_auth(token_sim: Simulator) -> None:
    """A request with a bad token gets 401 and does not consume a fault."""
    identifier = distribution.dist(token_sim).create_invoice()
    token_sim.faults.add("amili_distribution", "500", count=1)
    assert distribution.pstatus(token_sim, {"Identifier": identifier}).status_code == 401
    auth = {"Authorization": f"Bearer {distribution.TOKEN}"}
    assert distribution.pstatus(token_sim, {"Identifier": identifier}, headers=auth).status_code == 500


def _walk(sim: Simulator, identifier: str, stages: int) -> list[dict[str, Any]]:
    bodies = []
    for stage in range(stages):
        bodies.append(distribution.status_of(sim, identifier))
        if stage < stages - 1:
            sim.clock.advance(distribution.STAGE)
    return bodies


def _check_shape(body: dict[str, Any]) -> None:
    assert list(body) == distribution.TOP_KEYS
    assert distribution.TIMESTAMP.match(body["Received"])
    if body["Transaction"] is not None:
        tx = body["Transaction"]
        assert list(tx) == distribution.TRANSACTION_KEYS
        assert isinstance(tx["TransactionRid"], int)
        assert isinstance(tx["Amount"], float) and isinstance(tx["AmountExVat"], float)
        for key in ("LogTime", "InvoiceDate", "DueDate", "ChannelUpdateTime"):
            assert distribution.TIMESTAMP.match(tx[key])


def test_ok_life(sim: Simulator) -> None:
    """ "ok": New (no Transaction), Pending, Completed + Pending/Sent, then OK/Delivered/Matched and stops."""
    identifier = distribution.dist(sim).create_invoice("INV-OK", "7001")
    s0, s1, s2, s3, after = _walk(sim, identifier, 5)
    for body in (s0, s1, s2, s3):
        _check_shape(body)
    assert (s0["Status"], s0["Transaction"], s0["InvoiceLink"]) == (1, None, "")
    assert s0["Received"] == "2025-05-07T14:00:00"
    assert (s1["Status"], s1["Transaction"]) == (2, None)
    assert s1["ReceiptId"] == s0["ReceiptId"] and s1["Filename"] == s0["Filename"]

    tx2 = s2["Transaction"]
    assert s2["Status"] == 3 and s2["InvoiceLink"]
    assert (tx2["Status"], tx2["Channel"], tx2["RequestedChannel"], tx2["ActualChannel"]) == (
        "Pending",
        "EHF",
        "EHF",
        "EHF",
    )
    assert (tx2["ChannelStatus"], tx2["DeliveryTime"], tx2["CorrelationStatus"]) == ("Sent", None, "")
    assert tx2["InvoiceNumber"] == "7001"
    assert tx2["ChannelUpdateTime"] == tx2["LogTime"] == "2025-05-07T14:00:20"

    tx3 = s3["Transaction"]
    assert (tx3["Status"], tx3["ChannelStatus"], tx3["CorrelationStatus"]) == ("OK", "Delivered", "Matched")
    assert tx3["DeliveryTime"] == tx3["ChannelUpdateTime"] == "2025-05-07T14:00:30"
    assert tx3["TransactionRid"] == tx2["TransactionRid"]
    assert after == s3


def test_failed_life(sim: Simulator) -> None:
    """ "failed": New, Pending, then Completed with Failed/Rejected and the EHF error in LogText."""
    identifier = distribution.dist(sim).create_invoice(scenario="failed")
    s0, s1, s2, after = _walk(sim, identifier, 4)
    assert [s0["Status"], s1["Status"], s2["Status"]] == [1, 2, 3]
    _check_shape(s2)
    tx = s2["Transaction"]
    assert (tx["Status"], tx["ChannelStatus"], tx["DeliveryTime"]) == ("Failed", "Rejected", None)
    assert tx["LogText"] == "Invalid EHF: missing buyer reference"
    assert after == s2


def test_handled_life(sim: Simulator) -> None:
    """ "handled": ... Failed, then Handled by Compello Support with the note appended to LogText."""
    identifier = distribution.dist(sim).create_invoice(scenario="handled")
    *_, s2, s3, after = _walk(sim, identifier, 5)
    assert s2["Transaction"]["Status"] == "Failed"
    tx = s3["Transaction"]
    assert s3["Status"] == 3 and tx["Status"] == "Handled"
    assert tx["LogText"].startswith("Invalid EHF: missing buyer reference")
    assert "Compello Support" in tx["LogText"] and tx["LogText"] != s2["Transaction"]["LogText"]
    assert tx["LogTime"] == "2025-05-07T14:00:30"
    assert after == s3


def test_repeated_polls_in_a_stage_are_byte_identical(sim: Simulator) -> None:
    """Within one stage the answer is the same bytes every time."""
    identifier = distribution.dist(sim).create_invoice()
    sim.clock.advance(distribution.STAGE * 2 + 4)
    assert len({distribution.pstatus(sim, {"Identifier": identifier}).content for _ in range(3)}) == 1


def test_seeded_invoices_and_describe() -> None:
    """Two invoices are seeded by default ("ok" and "failed") and listed by describe()."""
    with common.running() as simulator:
        invoices = distribution.dist(simulator).invoices()
        assert [(i["Identifier"], i["InvoiceNo"], i["scenario"]) for i in invoices] == [
            ("SIM-DIST-0001", "250001", "ok"),
            ("SIM-DIST-0002", "250002", "failed"),
        ]
        assert "SIM-DIST-0001" in simulator.describe()
        assert "POLLER_AMILI_DISTRIBUTION__BASE_URL" in simulator.describe()
