"""Provider pushes (issue 14), the pure part: whether to believe a push, and which items it names.

A push is a hint, never the truth: it only makes the items it names due now; the poll that follows
produces the event, as any poll does. So believing a forged push would cost a poll, not a false
event; still, an unverified push is refused with nothing polled.

- **Billit** signs each push: ``Billit-Signature: t=<unix>,s=<hex>``, an HMAC-SHA256 over
  ``"<t>.<body>"`` with the webhook's secret (https://docs.billit.be/docs/verify-signature). A
  signature older or newer than ``TOLERANCE_S`` is refused (a replay).
- **Amili Norway (collection)** sends ``X-Webhook-Signature`` by a scheme it does not document
  (https://docs.amili.dev/webhooks-361430m0): a push is believed only on the account's
  unguessable ingress path token, and its ``IdempotencyKey`` is remembered so a retry polls once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import InputError

#: A push body larger than this is refused unread (413).
MAX_BODY_BYTES = 1_000_000
#: How far a Billit signature's timestamp may be from now, either way.
TOLERANCE_S = 300.0
#: Amili Norway push types that name a case or invoice, and the one that names a batch.
AMILI_ITEM_EVENTS = ("CASE", "CASE_UPDATED")
AMILI_BATCH_EVENTS = ("BATCH_COMPLETED",)


class PushRefused(InputError):
    """A push we do not believe or cannot read: ``status`` is the HTTP answer, ``outcome`` the
    ``poller_ingress_total`` label (``unsigned``, ``forged``, ``stale``, ``too_large``, ``not_json``,
    ``unknown_account``, ``unknown_entity``, ``rate_limited``)."""

    def __init__(self, status: int, outcome: str, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status, self.outcome, self.retry_after_s = status, outcome, retry_after_s


@dataclass(frozen=True)
class Named:
    """An item a push names: its kind and provider reference (as items are tracked)."""

    kind: str
    ref: str


def check_size(declared: int | None, body: bytes | None = None) -> None:
    """Refuse a body over MAX_BODY_BYTES, declared or read."""
    size = len(body) if body is not None else declared
    if size is not None and size > MAX_BODY_BYTES:
        raise PushRefused(413, "too_large", f"a push body is at most {MAX_BODY_BYTES:,} bytes")


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400 naming the problem (never echoing the body)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PushRefused(400, "not_json", "the push body is not JSON") from None


# -- Billit -------------------------------------------------------------------------------


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_billit(header: str | None, body: bytes, secrets: Sequence[str], *, now: float) -> None:
    """Believe the push only if one of ``secrets`` signed this body within TOLERANCE_S of ``now``.

    Raises:
        PushRefused: 401 with outcome ``unsigned``, ``forged`` or ``stale``.
    """
    if not secrets:
        raise PushRefused(401, "unsigned", "no webhook secret is configured for this account")
    if not header:
        raise PushRefused(401, "unsigned", "no Billit-Signature header")
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
        given = parts["s"]
    except (KeyError, ValueError):
        raise PushRefused(401, "unsigned", "Billit-Signature is not t=<unix>,s=<hex>") from None
    if abs(now - timestamp) > TOLERANCE_S:
        raise PushRefused(401, "stale", f"the signature's time is more than {TOLERANCE_S:g} s from now")
    for secret in secrets:
        if hmac.compare_digest(_mac(secret, timestamp, body), given.lower()):
            return
    raise PushRefused(401, "forged", "the signature does not match the body")


def billit_named(doc: Any) -> list[Named]:
    """The order a Billit push names: ``UpdatedEntityID`` of an Order push, the message's
    ``EntityDetail.OrderMessage.OrderID`` of a Message push."""
    if not isinstance(doc, Mapping):
        raise PushRefused(400, "unknown_entity", "a Billit push is a JSON object")
    kind = str(doc.get("UpdatedEntityType") or "")
    detail = doc.get("EntityDetail")
    message = detail.get("OrderMessage") if isinstance(detail, Mapping) else None
    if kind == "Order":
        order = doc.get("UpdatedEntityID")
    elif isinstance(message, Mapping):
        order = message.get("OrderID")
    else:
        order = None
    if order is None or isinstance(order, bool) or str(order).strip() in ("", "0"):
        raise PushRefused(400, "unknown_entity", "the push names no order (UpdatedEntityID, "
                          "EntityDetail.OrderMessage.OrderID)")
    return [Named("order", str(order).strip())]


# -- Amili Norway (collection) ------------------------------------------------------------


def verify_token(given: str | None, expected: str | None) -> None:
    """Believe an Amili Norway push only on the account's path token (constant-time compare)."""
    if not expected:
        raise PushRefused(401, "unsigned", "no push token is configured for this account")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise PushRefused(401, "forged", "wrong push token")


def amili_named(doc: Any, event: str | None) -> list[Named]:
    """The case, invoice or batch an Amili Norway push names.

    The event type is the ``X-Amili-Event`` header (or the body's ``event``/``type``). A batch push
    names ``data.batchId``; a case push names the case by ``data.caseNumber`` (how cases are
    tracked) or ``data.id``, and its invoice by ``data.invoiceId`` or ``data.id``: whichever is
    tracked is polled.
    """
    if not isinstance(doc, Mapping):
        raise PushRefused(400, "unknown_entity", "an Amili push is a JSON object")
    kind = str(event or doc.get("event") or doc.get("type") or "").upper()
    data = doc.get("data")
    if not isinstance(data, Mapping):
        raise PushRefused(400, "unknown_entity", "the push has no data object")
    if kind in AMILI_BATCH_EVENTS:
        wanted = [("batch", data.get("batchId")), ("batch", data.get("id"))]
    elif kind in AMILI_ITEM_EVENTS:
        wanted = [("case", data.get("caseNumber")), ("case", data.get("id")), ("invoice", data.get("invoiceId")),
                  ("invoice", data.get("id"))]
    else:
        raise PushRefused(400, "unknown_entity", f"push type {kind or '(none)'!r} names no tracked kind "
                          f"(known: {', '.join(AMILI_ITEM_EVENTS + AMILI_BATCH_EVENTS)})")
    named = list(dict.fromkeys(Named(k, str(ref).strip()) for k, ref in wanted
                               if isinstance(ref, str | int) and not isinstance(ref, bool) and str(ref).strip()))
    if not named:
        raise PushRefused(400, "unknown_entity", "the push names no id (data.id, data.caseNumber, data.batchId)")
    return named


def pushed_items(provider: str, body: bytes, headers: Mapping[str, str]) -> list[Named]:
    """The items a believed push of ``provider`` (``billit`` or ``amili_collection``) names;
    ``headers`` with lower-case names."""
    doc = parse_json(body)
    return billit_named(doc) if provider == "billit" else amili_named(doc, headers.get("x-amili-event"))
