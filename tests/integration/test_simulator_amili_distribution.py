"""The Amili Distribution (Compello) pstatus fake over real loopback HTTP: body forms, auth, lives, faults, admin."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from simulator import Simulator, SimulatorConfig
from simulator.amili_distribution import FakeAmiliDistribution

TIMEOUT = 5
STAGE = 10.0
TOKEN = "sim-partner-token"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
# Seed 000's response shape, key for key and in order.
TOP_KEYS = ["ReceiptId", "Filename", "InvoiceData", "Received", "Status", "Transaction", "InvoiceLink"]
TRANSACTION_KEYS = [
    "TransactionRid", "LogTime", "DeliveryTime", "Status", "Company", "Channel", "RequestedChannel",
    "ActualChannel", "Direction", "InvoiceType", "InvoiceNumber", "Filename", "LogText", "InvoiceeName",
    "InvoiceDate", "DueDate", "Amount", "AmountExVat", "KID", "ChannelStatus", "ChannelUpdateTime",
    "CorrelationStatus",
]  # fmt: skip


def make_sim(**options: Any) -> Simulator:
    opts: dict[str, Any] = {"amili_distribution_seed": 0}
    opts.update(options)
    return Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0, stage_seconds=STAGE, options=opts)).start()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A frozen-clock simulator with no Distribution invoices and no auth."""
    simulator = make_sim()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def token_sim() -> Iterator[Simulator]:
    """A simulator whose Distribution API requires a bearer token."""
    simulator = make_sim(amili_distribution_token=TOKEN)
    try:
        yield simulator
    finally:
        simulator.stop()


def dist(sim: Simulator) -> FakeAmiliDistribution:
    provider: FakeAmiliDistribution = sim.amili_distribution
    return provider


def pstatus(
    sim: Simulator, body: Any = None, *, data: bytes | None = None, headers: dict[str, str] | None = None, **kw: Any
) -> requests.Response:
    return requests.post(
        f"{sim.url}/send/pstatus",
        json=body if data is None else None,
        data=data,
        headers=headers,
        timeout=kw.pop("timeout", TIMEOUT),
    )


def status_of(sim: Simulator, identifier: str) -> dict[str, Any]:
    response = pstatus(sim, {"Identifier": identifier})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_message(response: requests.Response, status: int, message: str | None = None) -> None:
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["Message"] and isinstance(body["Message"], str) and body["Message"]
    if message is not None:
        assert body["Message"] == message


# ---- request body and lookup ---------------------------------------------------


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
    assert dist(sim).create_invoice("INV-A", "9001") == "INV-A"
    dist(sim).create_invoice("INV-B", "9002")
    response = pstatus(sim, body)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert list(response.json()) == TOP_KEYS


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
    dist(sim).create_invoice()
    headers = {"Content-Type": "application/json"}
    assert_message(pstatus(sim, body, data=data, headers=headers), 400)


def test_unknown_invoice_is_404(sim: Simulator) -> None:
    """An unknown invoice answers 404 {"Message": "Invoice not found"}."""
    assert_message(pstatus(sim, {"Identifier": "nope"}), 404, "Invoice not found")
    assert_message(pstatus(sim, {"InvoiceNo": "0"}), 404, "Invoice not found")


# ---- auth ---------------------------------------------------------------------


def test_no_auth_by_default(sim: Simulator) -> None:
    """Without amili_distribution_token the endpoint needs no Authorization; env has only the base URL."""
    identifier = dist(sim).create_invoice()
    assert pstatus(sim, {"Identifier": identifier}).status_code == 200
    assert dist(sim).env(sim.url) == {"POLLER_AMILI_DISTRIBUTION__BASE_URL": sim.url}


@pytest.mark.parametrize(
    "headers",
    [None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong-token", "no-scheme", "basic"],
)
def test_token_required_when_configured(token_sim: Simulator, headers: dict[str, str] | None) -> None:
    """With a token configured, a missing or wrong bearer token gets 401 with ASP.NET's message."""
    identifier = dist(token_sim).create_invoice()
    response = pstatus(token_sim, {"Identifier": identifier}, headers=headers)
    assert_message(response, 401, "Authorization has been denied for this request.")


def test_token_accepted_and_in_env(token_sim: Simulator) -> None:
    """The configured bearer token is accepted and exported; expire_tokens() is a no-op."""
    identifier = dist(token_sim).create_invoice()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert pstatus(token_sim, {"Identifier": identifier}, headers=auth).status_code == 200
    assert dist(token_sim).env(token_sim.url) == {
        "POLLER_AMILI_DISTRIBUTION__BASE_URL": token_sim.url,
        "POLLER_AMILI_DISTRIBUTION__TOKEN": TOKEN,
    }
    assert dist(token_sim).expire_tokens() == 0
    expired = requests.post(f"{token_sim.url}/_sim/amili_distribution/tokens/expire", timeout=TIMEOUT)
    assert expired.json() == {"expired": 0, "tokens_issued": 0}
    assert pstatus(token_sim, {"Identifier": identifier}, headers=auth).status_code == 200


def test_faults_apply_after_auth(token_sim: Simulator) -> None:
    """A request with a bad token gets 401 and does not consume a fault."""
    identifier = dist(token_sim).create_invoice()
    token_sim.faults.add("amili_distribution", "500", count=1)
    assert pstatus(token_sim, {"Identifier": identifier}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert pstatus(token_sim, {"Identifier": identifier}, headers=auth).status_code == 500


# ---- invoice lives --------------------------------------------------------------


def _walk(sim: Simulator, identifier: str, stages: int) -> list[dict[str, Any]]:
    bodies = []
    for stage in range(stages):
        bodies.append(status_of(sim, identifier))
        if stage < stages - 1:
            sim.clock.advance(STAGE)
    return bodies


def _check_shape(body: dict[str, Any]) -> None:
    assert list(body) == TOP_KEYS
    assert TIMESTAMP.match(body["Received"])
    if body["Transaction"] is not None:
        tx = body["Transaction"]
        assert list(tx) == TRANSACTION_KEYS
        assert isinstance(tx["TransactionRid"], int)
        assert isinstance(tx["Amount"], float) and isinstance(tx["AmountExVat"], float)
        for key in ("LogTime", "InvoiceDate", "DueDate", "ChannelUpdateTime"):
            assert TIMESTAMP.match(tx[key])


def test_ok_life(sim: Simulator) -> None:
    """ "ok": New (no Transaction), Pending, Completed + Pending/Sent, then OK/Delivered/Matched and stops."""
    identifier = dist(sim).create_invoice("INV-OK", "7001")
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
    identifier = dist(sim).create_invoice(scenario="failed")
    s0, s1, s2, after = _walk(sim, identifier, 4)
    assert [s0["Status"], s1["Status"], s2["Status"]] == [1, 2, 3]
    _check_shape(s2)
    tx = s2["Transaction"]
    assert (tx["Status"], tx["ChannelStatus"], tx["DeliveryTime"]) == ("Failed", "Rejected", None)
    assert tx["LogText"] == "Invalid EHF: missing buyer reference"
    assert after == s2


def test_handled_life(sim: Simulator) -> None:
    """ "handled": ... Failed, then Handled by Compello Support with the note appended to LogText."""
    identifier = dist(sim).create_invoice(scenario="handled")
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
    identifier = dist(sim).create_invoice()
    sim.clock.advance(STAGE * 2 + 4)
    assert len({pstatus(sim, {"Identifier": identifier}).content for _ in range(3)}) == 1


def test_seeded_invoices_and_describe() -> None:
    """Two invoices are seeded by default ("ok" and "failed") and listed by describe()."""
    simulator = Simulator(SimulatorConfig(port=0, speed=0, seed_orders=0)).start()
    try:
        invoices = dist(simulator).invoices()
        assert [(i["Identifier"], i["InvoiceNo"], i["scenario"]) for i in invoices] == [
            ("SIM-DIST-0001", "250001", "ok"),
            ("SIM-DIST-0002", "250002", "failed"),
        ]
        assert "SIM-DIST-0001" in simulator.describe()
        assert "POLLER_AMILI_DISTRIBUTION__BASE_URL" in simulator.describe()
    finally:
        simulator.stop()


# ---- faults ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["500", "503"])
def test_fault_5xx_is_html(sim: Simulator, kind: str) -> None:
    """ "500"/"503" faults answer that status with an HTML page, once."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", kind, count=1)
    response = pstatus(sim, {"Identifier": identifier})
    assert response.status_code == int(kind) and response.headers["Content-Type"].startswith("text/html")
    assert pstatus(sim, {"Identifier": identifier}).status_code == 200


def test_fault_429_has_retry_after(sim: Simulator) -> None:
    """A "429" fault answers {"Message"} with Retry-After."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "429", count=1)
    response = pstatus(sim, {"Identifier": identifier})
    assert_message(response, 429)
    assert response.headers["Retry-After"] == "1"


def test_fault_slow_trips_client_timeout(sim: Simulator) -> None:
    """A "slow" fault delays the answer past a short client timeout."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "slow", delay=0.5, count=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        pstatus(sim, {"Identifier": identifier}, timeout=0.2)
    assert pstatus(sim, {"Identifier": identifier}, timeout=0.2).status_code == 200


def test_fault_malformed_and_html(sim: Simulator) -> None:
    """ "malformed" gives 200 JSON that does not parse; "html" gives a 200 HTML page."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "malformed", count=1)
    response = pstatus(sim, {"Identifier": identifier})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    sim.faults.add("amili_distribution", "html", count=1)
    response = pstatus(sim, {"Identifier": identifier})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")


def test_fault_404_and_401_use_message_bodies(sim: Simulator) -> None:
    """ "404" and "401" faults answer {"Message"} bodies even for a known invoice without auth."""
    identifier = dist(sim).create_invoice()
    sim.faults.add("amili_distribution", "404", count=1)
    sim.faults.add("amili_distribution", "401", count=1)
    assert_message(pstatus(sim, {"Identifier": identifier}), 404, "Invoice not found")
    assert_message(pstatus(sim, {"Identifier": identifier}), 401, "Authorization has been denied for this request.")
    assert pstatus(sim, {"Identifier": identifier}).status_code == 200


def test_fault_scoped_to_one_invoice_hits_it_by_either_key(sim: Simulator) -> None:
    """A fault scoped to an invoice's number hits it when asked by Identifier too, and spares others."""
    first = dist(sim).create_invoice("INV-A", "9001")
    other = dist(sim).create_invoice("INV-B", "9002")
    sim.faults.add("amili_distribution", "503", ref="9001")
    assert pstatus(sim, {"Identifier": first}).status_code == 503
    assert pstatus(sim, {"Invoice": {"InvoiceNo": "9001"}}).status_code == 503
    assert pstatus(sim, {"Identifier": other}).status_code == 200


# ---- admin ----------------------------------------------------------------------


def test_admin_create_list_and_stage(sim: Simulator) -> None:
    """The admin routes create and list invoices and jump a stage."""
    created = requests.post(
        f"{sim.url}/_sim/amili_distribution/invoices",
        json={"Identifier": "X-1", "InvoiceNo": 42, "scenario": "handled"},
        timeout=TIMEOUT,
    )
    assert created.status_code == 201
    assert created.json() == {"Identifier": "X-1", "InvoiceNo": "42", "scenario": "handled"}
    auto = requests.post(f"{sim.url}/_sim/amili_distribution/invoices", json={}, timeout=TIMEOUT)
    assert auto.status_code == 201 and auto.json()["scenario"] == "ok"
    staged = requests.post(f"{sim.url}/_sim/amili_distribution/invoices/X-1/stage", json={"stage": 3}, timeout=TIMEOUT)
    assert staged.json() == {"Identifier": "X-1", "stage": 3}
    listed = requests.get(f"{sim.url}/_sim/amili_distribution/invoices", timeout=TIMEOUT).json()["invoices"]
    assert [(i["Identifier"], i["stage"], i["TransactionStatus"]) for i in listed] == [
        ("X-1", 3, "Handled"),
        (auto.json()["Identifier"], 0, None),
    ]
    assert status_of(sim, "X-1")["Transaction"]["Status"] == "Handled"


@pytest.mark.parametrize(
    "payload",
    [
        {"scenario": "lost"},
        {"Identifier": 5},
        {"identifier": ""},
        {"InvoiceNo": ["1"]},
        {"colour": "red"},
        [1, 2],
    ],
)
def test_admin_bad_input_is_400(sim: Simulator, payload: Any) -> None:
    """Invalid admin requests answer 400 with an error message."""
    response = requests.post(f"{sim.url}/_sim/amili_distribution/invoices", json=payload, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json()["error"]


def test_admin_duplicates_and_bad_stage(sim: Simulator) -> None:
    """A duplicate Identifier or InvoiceNo, or a bad stage, answers 400; an unknown invoice 404."""
    dist(sim).create_invoice("DUP", "100")
    url = f"{sim.url}/_sim/amili_distribution/invoices"
    for payload in ({"Identifier": "DUP"}, {"InvoiceNo": "100"}):
        response = requests.post(url, json=payload, timeout=TIMEOUT)
        assert response.status_code == 400 and "already exists" in response.json()["error"]
    assert requests.post(f"{url}/DUP/stage", json={"stage": 4}, timeout=TIMEOUT).status_code == 400
    assert requests.post(f"{url}/nope/stage", json={"stage": 1}, timeout=TIMEOUT).status_code == 404
