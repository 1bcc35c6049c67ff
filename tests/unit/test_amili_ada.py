"""Amili ADA case normalization, against seed 004's example."""

from __future__ import annotations

import copy
import json

import pytest

from tests.samples import DATA
from worker.errors import ProviderResponseInvalid
from worker.providers.amili_ada import describe_error, normalize

PAGE = json.loads((DATA / "amili_ada" / "cases_by_invoice_number.json").read_text())
CASE = PAGE["_items"][0]


def test_seed_case_every_field_and_raw_kept():
    """Seed 004's case: states, amounts, history lengths, RFC 1123 dates as ISO 8601."""
    doc = normalize(copy.deepcopy(CASE))
    assert doc.fields == {
        "state": "initializing", "status": "initializing", "customer_status": "initialized",
        "remaining": {"capital": 500, "costs": 0, "interest": 0, "transaction": 500},
        "state_history_length": 1, "status_history_length": 1,
        "latest_state_date": "2025-10-07T07:41:01Z", "closed": None, "invoice_number": "INV-2025-015",
    }
    assert (doc.status, doc.terminal) == ("initializing", False)
    assert doc.raw == CASE


@pytest.mark.parametrize(("closed", "terminal"), [
    (None, False), (False, False), (True, True),
    ({"date": "Tue, 07 Oct 2025 07:41:01 GMT", "reason": "paid"}, True),
])
def test_closed_is_terminal(closed, terminal):
    """`closed` (an object, or a flag) ends the case, whatever state says."""
    doc = normalize({**CASE, "closed": closed})
    assert doc.terminal is terminal and (doc.status == "closed") is terminal
    if isinstance(closed, dict):
        assert doc.fields["closed"] == {"date": "2025-10-07T07:41:01Z", "reason": "paid"}


def test_unknown_values_and_missing_fields_tolerated():
    """A new state value and missing amounts are kept as they are, not errors."""
    doc = normalize({"_id": "x", "state": "reminder", "status": "reminder_sent"})
    assert doc.status == "reminder_sent" and doc.fields["remaining"]["capital"] is None
    assert doc.fields["state_history_length"] is None


@pytest.mark.parametrize(("body", "needle"), [([], "not an object"), ({"state": "x"}, "no _id")])
def test_schema_drift(body, needle):
    """A body that is not a case raises ProviderResponseInvalid."""
    with pytest.raises(ProviderResponseInvalid, match=needle):
        normalize(body)


def test_describe_error():
    """Eve's error shape."""
    assert describe_error({"_status": "ERR", "_error": {"code": 401, "message": "Please provide proper credentials"}}) \
        == "Please provide proper credentials"
