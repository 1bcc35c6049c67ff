"""Amili ARM batch normalization: the HTTP status carries the state."""

from __future__ import annotations

import pytest

from worker.errors import ProviderResponseInvalid
from worker.providers.amili_arm import normalize

BODY = {"batchUuid": "b-1", "status": "PROCESSING", "documentsTotal": 3, "documentsProcessed": 1,
        "documentsFailed": 0, "results": [{"documentNo": "88776655", "status": "PROCESSED"},
                                          {"documentNo": "88776656", "status": "FAILED", "message": "bad KID"}]}


@pytest.mark.parametrize(("code", "main", "terminal"), [
    (202, "processing", False), (206, "partially_processed", True), (200, "processed", True)])
def test_http_status_is_the_state(code, main, terminal):
    """202 still processing, 206 finished with failures, 200 finished."""
    doc = normalize({"httpStatus": code, "body": BODY})
    assert (doc.status, doc.terminal) == (main, terminal)
    assert doc.fields == {"http_status": code, "status": "processing", "documents_total": 3,
                          "documents_processed": 1, "documents_failed": 0, "failed_documents": ["88776656"],
                          "finished": None}
    assert doc.raw["body"] == BODY


def test_empty_body_tolerated():
    """A 202 with no body (its schema is undocumented) still normalizes."""
    doc = normalize({"httpStatus": 202, "body": None})
    assert doc.status == "processing" and doc.fields["documents_total"] is None


@pytest.mark.parametrize(("raw", "needle"), [
    ({"httpStatus": 201, "body": {}}, "expected 200, 202 or 206"),
    ({"httpStatus": 200, "body": []}, "batch body"),
    ({"httpStatus": 200, "body": {"results": "x"}}, "results"),
])
def test_schema_drift(raw, needle):
    """Unexpected statuses and shapes raise ProviderResponseInvalid."""
    with pytest.raises(ProviderResponseInvalid, match=needle):
        normalize(raw)
