"""Amili Distribution pstatus normalization, against seed 000's example."""

from __future__ import annotations

import copy
import json

import pytest

from tests.samples import DATA
from worker.errors import ProviderResponseInvalid
from worker.providers.amili_distribution import describe_error, normalize

EXAMPLE = json.loads((DATA / "amili_distribution" / "pstatus_200_example.json").read_text())


def test_seed_example_every_field_and_raw_kept():
    """The docs' example (Status 0, placeholder strings) normalizes field by field."""
    raw = copy.deepcopy(EXAMPLE)
    doc = normalize(raw)
    assert doc.fields == {
        "request_status": 0, "transaction_status": "string", "channel": "string",
        "requested_channel": "string", "actual_channel": "string", "channel_status": "string",
        "channel_update_time": "string", "delivery_time": "string", "log_text": "string",
        "correlation_status": "", "transaction_rid": 0, "invoice_number": "string",
    }
    assert (doc.status, doc.terminal) == ("unknown", False)  # Status 0 is not a documented value
    assert doc.raw == EXAMPLE


def _body(status, tx_status=None, **tx):
    body = copy.deepcopy(EXAMPLE)
    body["Status"] = status
    if tx_status is None:
        body["Transaction"] = None
    else:
        body["Transaction"].update(Status=tx_status, **tx)
    return body


@pytest.mark.parametrize(("status", "tx", "main", "terminal"), [
    (1, None, "new", False),
    (2, None, "queued", False),
    ("2", None, "queued", False),
    (3, None, "completed", False),
    (3, "Pending", "awaiting_response", False),
    (3, "OK", "ok", True),
    (3, "Failed", "failed", True),
    (3, "Handled", "handled", True),
    (2, "OK", "queued", False),
    (3, "Exotic", "unknown", False),
])
def test_status_and_terminal_rule(status, tx, main, terminal):
    """Terminal only when Status is 3 and the transaction is OK, Failed or Handled."""
    doc = normalize(_body(status, tx))
    assert (doc.status, doc.terminal) == (main, terminal)


def test_transaction_null_before_processing():
    """Before the invoice is processed the transaction fields are null, not an error."""
    doc = normalize(_body(1))
    assert doc.fields["transaction_status"] is None and doc.fields["log_text"] is None


@pytest.mark.parametrize(("body", "needle"), [
    ([], "not an object"),
    ({"ReceiptId": "x"}, "no numeric Status"),
    ({"Status": "three"}, "no numeric Status"),
    ({"Status": True}, "no numeric Status"),
    ({"Status": 3, "Transaction": "OK"}, "Transaction"),
])
def test_schema_drift(body, needle):
    """A body that is not a pstatus answer raises ProviderResponseInvalid naming the problem."""
    with pytest.raises(ProviderResponseInvalid, match=needle):
        normalize(body)


def test_describe_error():
    """ASP.NET-style {"Message": ...} error bodies."""
    assert describe_error({"Message": "Invoice not found"}) == "Invoice not found"
    assert describe_error([1]) is None
