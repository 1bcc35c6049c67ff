"""The discovery filter (worker.discovery): Billit's OData comparisons, evaluated on a listed entry."""

from __future__ import annotations

import pytest

from worker.discovery import matches, parse_filter

ORDER = {"OrderDirection": "Income", "OrderType": "Invoice", "TotalIncl": 121, "Paid": False,
         "Customer": {"Name": "O'Brien"}, "Reference": None}


@pytest.mark.parametrize(("text", "expected"), [
    ("", True),
    ("OrderDirection eq 'Income' and OrderType eq 'Invoice'", True),
    ("OrderType eq 'CreditNote'", False),
    ("OrderType ne 'CreditNote'", True),
    ("TotalIncl eq 121 and Paid eq false", True),
    ("Customer.Name eq 'O''Brien'", True),
    ("Reference eq null and Missing eq null", True),
    ("Missing ne null", False),
])
def test_filters_read_the_entry(text, expected):
    assert matches(parse_filter(text), ORDER) is expected


@pytest.mark.parametrize("text", ["OrderType = 'Invoice'", "OrderType eq Invoice", "a eq 'x' or b eq 'y'",
                                  "startswith(OrderType, 'In')", "OrderType eq 'unterminated"])
def test_anything_else_is_refused_saying_what(text):
    with pytest.raises(ValueError, match="cannot read .* use comparisons like"):
        parse_filter(text)
