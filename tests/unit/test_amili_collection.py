"""Amili collection normalization, against seed 001's invoice example."""

from __future__ import annotations

import copy
import json

import pytest

from tests.samples import DATA
from worker.errors import ProviderResponseInvalid
from worker.providers.amili_collection import describe_error, normalize_batch, normalize_invoice
from worker.providers.common import snake

EXAMPLE = json.loads((DATA / "amili_collection" / "invoice_200_example.json").read_text())


def test_seed_invoice_every_field_and_raw_kept():
    """Seed 001's invoice (old spellings "Open"/"NOTICE", closedAt set) field by field."""
    doc = normalize_invoice(copy.deepcopy(EXAMPLE))
    assert doc.fields == {
        "status": "open", "type": "notice", "original_amount": 0, "current_amount": 0, "paid_amount": 0,
        "currency": "string", "closed_at": "2019-08-24T14:15:22Z",
        "claims": [{"type": "string", "original_amount": 0, "current_amount": 0, "paid_amount": 0,
                    "currency": "string"}],
        "case_number": "string",
    }
    assert doc.terminal is True and doc.status == "closed"  # closedAt decides, whatever the status says
    assert doc.raw == EXAMPLE


def _invoice(**data):
    body = copy.deepcopy(EXAMPLE)
    body["data"].update(data)
    return body


def test_old_and_new_spellings_give_the_same_fields():
    """"Open"/"NOTICE" (old API) and "OPEN"/"NOTICE" (AutoCollect) are one value: no spurious diff."""
    old = normalize_invoice(_invoice(status="Open", type="NOTICE", closedAt=None))
    new = normalize_invoice(_invoice(status="OPEN", type="NOTICE", closedAt=None))
    assert old.fields == new.fields and old.status == new.status == "open" and not old.terminal


@pytest.mark.parametrize(("value", "expected"), [
    ("Open", "open"), ("OPEN", "open"), ("PAYMENT_REMINDER", "payment_reminder"),
    ("PaymentReminder", "payment_reminder"), ("COLLECTION_NOTICE", "collection_notice"),
    ("Paused", "paused"), ("payment reminder", "payment_reminder"), (None, None), ("", None),
])
def test_enum_spellings(value, expected):
    """Enum values fold to one snake_case spelling."""
    assert snake(value) == expected


@pytest.mark.parametrize(("status", "closed_at", "main", "terminal"), [
    ("OPEN", None, "open", False),
    ("PAUSED", None, "paused", False),
    ("WITHDRAWN", None, "withdrawn", True),
    ("CLOSED", "2025-01-01T00:00:00Z", "closed", True),
    ("OPEN", "2025-01-01T00:00:00Z", "closed", True),
    ("SOMETHING_NEW", None, "something_new", False),
])
def test_invoice_terminal_rule(status, closed_at, main, terminal):
    """closedAt (or a closing status) ends the life; unknown statuses are tolerated."""
    doc = normalize_invoice(_invoice(status=status, closedAt=closed_at))
    assert (doc.status, doc.terminal) == (main, terminal)


@pytest.mark.parametrize(("status", "terminal"), [
    ("QUEUED", False), ("PROCESSING", False), ("SUCCESS", True), ("PARTIAL", True), ("FAILED", True)])
def test_batch(status, terminal):
    """Batches are polled until SUCCESS, PARTIAL or FAILED."""
    raw = {"summary": {"status": "SUCCESS"}, "data": {
        "batchId": "b1", "type": "INVOICE", "status": status, "finishedAt": None,
        "succeeded": [{"id": 1}, {"id": 2}], "failed": [{"reference": "INV-9", "errors": []}]}}
    doc = normalize_batch(raw)
    assert doc.terminal is terminal and doc.status == status.lower()
    assert doc.fields == {"status": status.lower(), "finished_at": None, "succeeded": 2, "failed": 1,
                          "failures": ["INV-9"]}


@pytest.mark.parametrize(("body", "needle"), [
    ({"data": None}, "data is a JSON NoneType"),
    ({"summary": {}}, "data is a JSON NoneType"),
    ({"data": {"status": "OPEN"}}, "no id"),
    ({"data": {"id": "x", "claims": {"a": 1}}}, "claims"),
])
def test_invoice_schema_drift(body, needle):
    """Missing identity or wrong types raise ProviderResponseInvalid naming the field."""
    with pytest.raises(ProviderResponseInvalid, match=needle):
        normalize_invoice(body)


def test_describe_error_shapes():
    """The envelope's errors list and OAuth's error/error_description."""
    assert describe_error({"errors": [{"code": "Unauthorized", "message": "expired"}]}) == "Unauthorized: expired"
    assert describe_error({"error": "invalid_client", "error_description": "bad"}) == "invalid_client: bad"
