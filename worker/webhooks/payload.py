"""What a subscriber receives: the Standard Webhooks body and headers. Pure."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from typing import Any

from standardwebhooks import Webhook

from worker.dates import iso_z
from worker.documents import NotStrictJSON

#: The body's contract version (docs/event.schema.json). Additions bump the minor number and
#: never break a receiver; a major bump would be announced.
SCHEMA_VERSION = "1.2"

#: Secrets are Standard Webhooks keys: "whsec_" + base64 of random bytes (24-64 allowed).
SECRET_PREFIX = "whsec_"


def new_secret(entropy: bytes | None = None) -> str:
    """A fresh ``whsec_`` secret from 32 random bytes."""
    raw = entropy if entropy is not None else os.urandom(32)
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def body(event_id: str, event_type: str, created_at: datetime, data: dict[str, Any], *,
         item_id: int | None, seq: int | None) -> bytes:
    """The bytes that are signed and sent: compact, strict JSON (RFC 8259).

    ``{"id", "version", "type", "timestamp", "item_id", "seq", "data"}``. ``id`` equals the
    ``webhook-id`` header; ``seq`` counts one item's events 1, 2, 3... so a receiver sees a gap;
    both are null on events of no item (``provider.paused``, ``subscription.disabled``).

    Raises:
        NotStrictJSON: ``data`` holds NaN or Infinity, or nests too deeply to encode.
    """
    timestamp = iso_z(created_at)
    envelope = {"id": event_id, "version": SCHEMA_VERSION, "type": event_type, "timestamp": timestamp,
                "item_id": item_id, "seq": seq, "data": data}
    try:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except ValueError as err:  # NaN or Infinity: strict receivers reject them
        raise NotStrictJSON(f"event {event_id} is not strict JSON: {err}") from None
    except RecursionError:
        raise NotStrictJSON(f"event {event_id} nests too deeply to encode as JSON") from None


def headers(event_id: str, sent_at: datetime, payload: bytes, secrets: list[str]) -> dict[str, str]:
    """Standard Webhooks headers. ``webhook-id`` is the event id, the same on every retry and
    replay, so receivers can dedupe; one ``v1,`` signature per active secret (rotation)."""
    signatures = " ".join(Webhook(secret).sign(event_id, sent_at, payload.decode()) for secret in secrets)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
