"""What each fake pushes (simulator.pushes sends it): Billit's webhooks API and signed pushes, and
Amili Norway's case and batch pushes."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from typing import Any

from simulator.amili_collection import FakeAmiliCollection
from simulator.billit import FakeBillit
from simulator.billit_order import error_response
from simulator.pushes import Push, Pusher
from simulator.router import HttpError, Request, Response, Router, json_response

ENTITY_TYPES = ("Order", "Message")
UPDATE_TYPES = ("I", "U", "D")


def billit_signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix>,s=<hex>``: HMAC-SHA256 over ``"<t>.<body>"`` keyed with the webhook's secret, as
    https://docs.billit.be/docs/verify-signature describes (written here apart from the poller's
    check, so a mistake in one is not mirrored in the other)."""
    mac = hmac.new(secret.encode("utf-8"), b"%d.%s" % (timestamp, body), hashlib.sha256)
    return f"t={timestamp},s={mac.hexdigest()}"


class BillitWebhooks:
    """``POST/GET /v1/webhooks`` and ``DELETE /v1/webhooks/{id}`` (https://docs.billit.be/docs/webhooks,
    …/get-and-delete), and the pushes to the registered URLs: an Order ``U`` push names the order in
    ``UpdatedEntityID``, a Message ``U`` push in ``EntityDetail.OrderMessage.OrderID``."""

    def __init__(self, billit: FakeBillit, *, wall: Any = time.time) -> None:
        self.billit, self.wall = billit, wall
        self._lock = threading.Lock()
        self._hooks: dict[int, dict[str, Any]] = {}
        self._next = 1

    def register(self, router: Router) -> None:
        """Add the webhook routes."""
        router.add("POST", "/v1/webhooks", self._create, label="billit")
        router.add("GET", "/v1/webhooks", self._list, label="billit")
        router.add("DELETE", "/v1/webhooks/{webhook_id}", self._delete, label="billit")

    def add(self, url: str, entity_type: str = "Order", update_type: str = "U", *,
            secret: str | None = None) -> dict[str, Any]:
        """Register a webhook (Python API; a test may choose the secret); returns it with its secret."""
        if entity_type not in ENTITY_TYPES or update_type not in UPDATE_TYPES:
            raise ValueError(f"EntityType is one of {ENTITY_TYPES}, EntityUpdateType one of {UPDATE_TYPES}")
        if not url.startswith(("https://", "http://")):
            raise ValueError("WebhookURL must be an http(s) URL")
        with self._lock:
            hook = {"WebhookID": self._next, "EntityType": entity_type, "EntityUpdateType": update_type,
                    "WebhookURL": url, "Secret": secret or secrets.token_hex(32)}
            self._hooks[self._next] = hook
            self._next += 1
        return dict(hook)

    def hooks(self) -> list[dict[str, Any]]:
        """Every registered webhook, with its secret."""
        with self._lock:
            return [dict(h) for h in self._hooks.values()]

    # -- simulator.pushes.Source ----------------------------------------------------------

    def stage_of(self, object_id: str) -> int:
        return self.billit.stage_of(int(object_id))

    def next_change_at(self, object_id: str) -> float | None:
        return self.billit.next_change_at(int(object_id))

    def pushes_for(self, object_id: str, stage: int) -> list[Push]:
        hooks = self.hooks()
        if not hooks:  # most tests register none: rendering the order would be wasted work
            return []
        order = self.billit.order_body(int(object_id))
        out = []
        for hook in hooks:
            if hook["EntityUpdateType"] != "U":
                continue
            if hook["EntityType"] == "Order":
                doc = {"UpdatedEntityID": int(object_id), "UpdatedEntityType": "Order", "WebhookUpdateTypeTC": "U",
                       "EntityDetail": {"OrderID": int(object_id), "OrderStatus": order.get("OrderStatus")}}
            else:
                messages = order.get("Messages") or [{}]
                doc = {"UpdatedEntityID": abs(hash((object_id, stage))) % 10**9, "UpdatedEntityType": "Message",
                       "WebhookUpdateTypeTC": "U",
                       "EntityDetail": {"OrderMessage": {"OrderID": int(object_id), **messages[-1]}}}
            body = json.dumps(doc).encode()
            out.append((hook["WebhookURL"], body,
                        {"Billit-Signature": billit_signature(hook["Secret"], int(self.wall()), body)}))
        return out

    # -- HTTP -----------------------------------------------------------------------------

    def _create(self, request: Request) -> Response:
        denied = self.billit.authenticate(request)  # the same fake's own auth
        if denied is not None:
            return denied
        data = request.json_object()
        try:
            hook = self.add(str(data.get("WebhookURL") or ""), str(data.get("EntityType") or ""),
                            str(data.get("EntityUpdateType") or ""))
        except ValueError as err:
            return error_response(400, "GenericError", str(err))
        return json_response(200, hook)

    def _list(self, request: Request) -> Response:
        denied = self.billit.authenticate(request)
        if denied is not None:
            return denied
        return json_response(200, {"Items": self.hooks()})

    def _delete(self, request: Request, webhook_id: str) -> Response:
        denied = self.billit.authenticate(request)
        if denied is not None:
            return denied
        with self._lock:
            gone = self._hooks.pop(int(webhook_id), None) if webhook_id.isdigit() else None
        if gone is None:
            return error_response(404, "NotFound", "Webhook not found")
        return json_response(200, {})


class AmiliPushes:
    """Amili Norway's pushes to one URL (``POST /_sim/amili_collection/webhooks {"url": …}``):
    ``CASE_UPDATED`` when an invoice's case moves on, ``BATCH_COMPLETED`` when a batch finishes.
    The payload is ``{"event", "data"}`` with the case's ``id``, ``caseNumber``, ``invoiceId`` and ``status``, or the
    batch's ``batchId`` and ``status`` (the documented fields; the envelope is an assumption)."""

    def __init__(self, amili: FakeAmiliCollection) -> None:
        self.amili = amili
        self.url: str | None = None

    def register(self, router: Router) -> None:
        """Add the admin route that sets the push URL."""
        router.add("POST", "/_sim/amili_collection/webhooks", self._set_url, label="_sim")

    def stage_of(self, object_id: str) -> int:
        return self.amili.stage_of(object_id)

    def next_change_at(self, object_id: str) -> float | None:
        return self.amili.next_change_at(object_id)

    def pushes_for(self, object_id: str, stage: int) -> list[Push]:
        if self.url is None:
            return []
        if self.amili.is_batch(object_id):
            batch = self.amili.batch_body(object_id)
            if batch.get("status") == "QUEUED":
                return []
            event, data = "BATCH_COMPLETED", {"batchId": object_id, "status": batch.get("status")}
        else:
            case = self.amili.case_body(object_id)
            event = "CASE_UPDATED"
            data = {"id": case.get("id"), "caseNumber": case.get("caseNumber"), "invoiceId": object_id,
                    "status": case.get("status"), "fields": ["status"]}
        body = json.dumps({"event": event, "data": data}).encode()
        return [(self.url, body, {"X-Amili-Event": event, "IdempotencyKey": str(uuid.uuid4()),
                                  "X-Amili-Request-Id": str(uuid.uuid4())})]

    def _set_url(self, request: Request) -> Response:
        url = request.json_object().get("url")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise HttpError(400, "url must be an http(s) URL or null")
        self.url = url
        return json_response(200, {"url": url})


def attach_pushes(sim: Any) -> tuple[Pusher, BillitWebhooks, AmiliPushes | None]:
    """Give a simulator its pusher: Billit's webhooks always, Amili Norway's when it runs."""
    pusher = Pusher(sim.clock)
    hooks = BillitWebhooks(sim.billit)
    hooks.register(sim.router)
    pusher.add_source("billit", hooks)
    sim.billit.on_change = lambda object_id, stage: pusher.changed("billit", object_id, stage=stage)
    amili = sim.providers.get("amili_collection")
    if not isinstance(amili, FakeAmiliCollection):
        return pusher, hooks, None
    pushes = AmiliPushes(amili)
    pushes.register(sim.router)
    pusher.add_source("amili_collection", pushes)
    amili.on_change = lambda object_id, stage: pusher.changed("amili_collection", object_id, stage=stage)
    return pusher, hooks, pushes
