"""What a subscriber receives: the Standard Webhooks body and headers. Pure."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from typing import Any

from standardwebhooks import Webhook

#: Secrets are Standard Webhooks keys: "whsec_" + base64 of random bytes (24-64 allowed).
SECRET_PREFIX = "whsec_"


def new_secret(entropy: bytes | None = None) -> str:
    """A fresh ``whsec_`` secret from 32 random bytes."""
    raw = entropy if entropy is not None else os.urandom(32)
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def body(event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """``{"type", "timestamp", "data"}``, compact JSON: the bytes that are signed and sent."""
    timestamp = created_at.isoformat().replace("+00:00", "Z")
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": data},
                      separators=(",", ":"), ensure_ascii=False).encode()


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
