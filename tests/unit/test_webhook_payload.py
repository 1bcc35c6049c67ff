"""worker.webhooks.payload: the Standard Webhooks body and headers. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from worker.documents import NotStrictJSON
from worker.webhooks.payload import SCHEMA_VERSION, SECRET_PREFIX, body, headers, new_secret

CREATED = datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC)
SENT = datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC)


def test_body_is_compact_strict_json_with_the_envelope() -> None:
    raw = body("evt_1", "status.changed", CREATED, {"status": "paid", "name": "Åse"}, item_id=7, seq=3)
    assert b" " not in raw.replace("Åse".encode(), b"")
    assert "Åse".encode() in raw  # UTF-8, not \\u escapes
    assert json.loads(raw) == {"id": "evt_1", "version": SCHEMA_VERSION, "type": "status.changed",
                               "timestamp": "2026-11-23T10:00:00.250000Z", "item_id": 7, "seq": 3,
                               "data": {"status": "paid", "name": "Åse"}}


def test_events_of_no_item_have_null_item_and_seq() -> None:
    got = json.loads(body("evt_2", "provider.paused", CREATED, {}, item_id=None, seq=None))
    assert (got["item_id"], got["seq"]) == (None, None)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_not_strict_json(value: float) -> None:
    with pytest.raises(NotStrictJSON, match="evt_3 is not strict JSON"):
        body("evt_3", "status.changed", CREATED, {"amount": value}, item_id=1, seq=1)


def test_too_deep_a_document_is_not_strict_json() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(100_000):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    with pytest.raises(NotStrictJSON, match="nests too deeply"):
        body("evt_4", "status.changed", CREATED, deep, item_id=1, seq=1)


def test_new_secret_is_a_whsec_key() -> None:
    secret = new_secret(bytes(range(32)))
    assert secret == SECRET_PREFIX + base64.b64encode(bytes(range(32))).decode()
    assert new_secret() != new_secret()
    assert len(base64.b64decode(new_secret()[len(SECRET_PREFIX):])) == 32


def expected_signature(secret: str, event_id: str, sent_at: datetime, raw: bytes) -> str:
    """The Standard Webhooks signature, computed from the spec: HMAC-SHA256 over ``id.timestamp.body``."""
    key = base64.b64decode(secret[len(SECRET_PREFIX):])
    signed = f"{event_id}.{int(sent_at.timestamp())}.".encode() + raw
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def test_headers_sign_once_per_secret() -> None:
    old, new = new_secret(b"a" * 32), new_secret(b"b" * 32)
    raw = body("evt_5", "status.changed", CREATED, {"status": "paid"}, item_id=1, seq=1)
    got = headers("evt_5", SENT, raw, [new, old])
    assert got == {"webhook-id": "evt_5", "webhook-timestamp": str(int(SENT.timestamp())),
                   "content-type": "application/json",
                   "webhook-signature": " ".join(expected_signature(s, "evt_5", SENT, raw) for s in (new, old))}


def test_headers_verify_with_the_reference_library() -> None:
    secret, now = new_secret(b"c" * 32), datetime.now(UTC)
    raw = body("evt_6", "status.changed", CREATED, {"status": "paid"}, item_id=1, seq=1)
    assert Webhook(secret).verify(raw, headers("evt_6", now, raw, [secret])) == json.loads(raw)
