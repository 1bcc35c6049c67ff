"""The pure half of provider pushes (worker.pushes): Billit's signature, and what a push names."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from worker.ingress import Bucket
from worker.pushes import (
    MAX_BODY_BYTES,
    TOLERANCE_S,
    Named,
    PushRefused,
    amili_named,
    billit_named,
    check_size,
    parse_json,
    pushed_items,
    verify_billit,
    verify_token,
)

NOW = 1_764_633_600.0
BODY = b'{"UpdatedEntityID":1001,"UpdatedEntityType":"Order"}'


def header(secret: str, t: float, body: bytes = BODY) -> str:
    return f"t={int(t)},s={hmac.new(secret.encode(), f'{int(t)}.'.encode() + body, hashlib.sha256).hexdigest()}"


def refused(call, *args, **kw) -> tuple[int, str]:
    with pytest.raises(PushRefused) as err:
        call(*args, **kw)
    return err.value.status, err.value.outcome


def test_a_billit_signature_by_any_configured_secret_within_the_tolerance_is_believed():
    verify_billit(header("s1", NOW), BODY, ["s1"], now=NOW)
    verify_billit(header("s2", NOW - TOLERANCE_S), BODY, ["s1", "s2"], now=NOW)  # e.g. during a secret refresh
    verify_billit(header("s1", NOW + TOLERANCE_S).upper().replace("T=", "t=").replace(",S=", ",s="), BODY, ["s1"],
                  now=NOW)  # hex in capitals


@pytest.mark.parametrize(("given", "secrets", "outcome"), [
    (None, ["s1"], "unsigned"),
    ("", ["s1"], "unsigned"),
    ("t=abc,s=00", ["s1"], "unsigned"),
    ("s=00", ["s1"], "unsigned"),
    (header("s1", NOW), [], "unsigned"),
    (header("s2", NOW), ["s1"], "forged"),
    (header("s1", NOW, b"{}"), ["s1"], "forged"),
    (header("s1", NOW - TOLERANCE_S - 1), ["s1"], "stale"),
    (header("s1", NOW + TOLERANCE_S + 1), ["s1"], "stale"),
])
def test_a_billit_push_without_a_good_signature_is_refused(given, secrets, outcome):
    assert refused(verify_billit, given, BODY, secrets, now=NOW) == (401, outcome)


def test_what_a_billit_push_names():
    assert billit_named({"UpdatedEntityID": 1001, "UpdatedEntityType": "Order"}) == [Named("order", "1001")]
    assert billit_named({"UpdatedEntityID": 77, "UpdatedEntityType": "Message",
                         "EntityDetail": {"OrderMessage": {"OrderID": 1002}}}) == [Named("order", "1002")]
    for doc in ({}, [], {"UpdatedEntityType": "Order"}, {"UpdatedEntityType": "Message", "UpdatedEntityID": 5},
                {"UpdatedEntityType": "Order", "UpdatedEntityID": True}):
        assert refused(billit_named, doc) == (400, "unknown_entity")


def test_what_an_amili_push_names():
    assert amili_named({"data": {"batchId": "b-1", "status": "SUCCESS"}}, "BATCH_COMPLETED") == [Named("batch", "b-1")]
    assert amili_named({"event": "CASE_UPDATED", "data": {"id": "c", "caseNumber": 7000001, "invoiceId": "i"}},
                       None) == [Named("case", "7000001"), Named("case", "c"), Named("invoice", "i"),
                                 Named("invoice", "c")]
    assert refused(amili_named, {"data": {"id": "x"}}, "SETTLEMENT_CREATED") == (400, "unknown_entity")
    assert refused(amili_named, {"data": {}}, "CASE") == (400, "unknown_entity")
    assert refused(amili_named, {"event": "CASE"}, None) == (400, "unknown_entity")


def test_a_path_token_body_size_and_json():
    verify_token("t" * 40, "t" * 40)
    assert refused(verify_token, "u" * 40, "t" * 40) == (401, "forged")
    assert refused(verify_token, None, "t" * 40) == (401, "forged")
    assert refused(verify_token, "t" * 40, None) == (401, "unsigned")
    check_size(MAX_BODY_BYTES)
    assert refused(check_size, MAX_BODY_BYTES + 1) == (413, "too_large")
    assert refused(check_size, None, b" " * (MAX_BODY_BYTES + 1)) == (413, "too_large")
    assert parse_json(b'{"a": 1}') == {"a": 1}
    assert refused(parse_json, b"\xff") == (400, "not_json")


def test_the_push_bucket_refills_at_its_rate():
    bucket = Bucket()
    assert [bucket.take("k", rate=2, burst=2, now=0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert bucket.take("k", rate=2, burst=2, now=0.5) == 0.0
    assert bucket.take("other", rate=2, burst=2, now=0.5) == 0.0  # per key


def test_a_push_is_read_by_its_provider():
    """Billit's body names an order; Amili's names by its X-Amili-Event header."""
    assert pushed_items("billit", BODY, {}) == [Named("order", "1001")]
    amili = pushed_items("amili_collection", b'{"data": {"id": "c-1"}}', {"x-amili-event": "case"})
    assert amili == [Named("case", "c-1"), Named("invoice", "c-1")]
    assert refused(pushed_items, "billit", b"{nope", {}) == (400, "not_json")
