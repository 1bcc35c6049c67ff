"""worker.documents.document_digest: equal digests exactly when the documents are equal as stored
(status, terminal flag, fields), whatever the key order; the raw body and the version do not count."""

from __future__ import annotations

import pytest

from worker.documents import document_digest
from worker.domain import StatusDocument

BASE = StatusDocument("sent", False, {"a": 1, "b": {"c": [1, 2], "d": "é"}}, raw={"x": 1}, version="v1")


def test_key_order_raw_body_and_version_do_not_count():
    same = StatusDocument("sent", False, {"b": {"d": "é", "c": [1, 2]}, "a": 1}, raw={"y": 2}, version="v2")
    assert document_digest(same) == document_digest(BASE)
    assert len(document_digest(BASE)) == 32


@pytest.mark.parametrize("other", [
    StatusDocument("paid", False, BASE.fields),
    StatusDocument("sent", True, BASE.fields),
    StatusDocument("sent", False, {"a": 2, "b": {"c": [1, 2], "d": "é"}}),
    StatusDocument("sent", False, {"a": 1, "b": {"c": [2, 1], "d": "é"}}),  # list order is a change
    StatusDocument("sent", False, {"a": 1, "b": {"c": [1, 2], "d": "é"}, "e": None}),
])
def test_any_change_of_status_terminal_or_fields_counts(other):
    assert document_digest(other) != document_digest(BASE)


def test_a_document_that_is_not_strict_json_has_no_digest():
    with pytest.raises(ValueError):
        document_digest(StatusDocument("sent", False, {"a": float("nan")}))
