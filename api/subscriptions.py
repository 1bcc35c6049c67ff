"""`/v1/subscriptions` and `/v1/deliveries`: where events go, and how each delivery went."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from api.deps import PROBLEMS, Reader, Services, Writer
from worker.store.deliveries import DELIVERY_STATES
from worker.subscriptions import KEEP, delivery_dict, subscription_dict

router = APIRouter(tags=["subscriptions"], responses=PROBLEMS)

_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "The stored state does not allow it; "
                                                                     "the problem says why."}}



def _types() -> Any:
    return Field(None, validation_alias=AliasChoices("types", "event_types"), examples=[["status.changed"]],
                 description="Only these event types (`event_types` in responses); all when null or empty.")


def _providers() -> Any:
    return Field(None, examples=[["billit"]], description="Only events of these providers; all when null or empty.")


def _labels() -> Any:
    return Field(None, examples=[{"customer": "acme"}],
                 description="Only events of items carrying every one of these labels (events of no item never "
                             "match); every item when null or empty.")


class SubscriptionIn(BaseModel):
    """A webhook endpoint and the events it wants."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, examples=["https://hooks.example.com/poller"],
                     description="https:// endpoint that receives the events (Standard Webhooks).")
    types: list[str] | None = _types()
    providers: list[str] | None = _providers()
    labels: dict[str, str] | None = _labels()


class SubscriptionPatch(BaseModel):
    """What may change; what is left out stays. Filters apply to events from now on."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, max_length=2000, description="A new endpoint, checked as on create.")
    types: list[str] | None = _types()
    providers: list[str] | None = _providers()
    labels: dict[str, str] | None = _labels()
    enabled: bool | None = Field(None, description="false: deliveries wait, nothing is dropped; true: deliver "
                                                   "again, starting with what waited.")


class RecoverIn(BaseModel):
    """Where to start recovering from."""

    model_config = ConfigDict(extra="forbid")

    since: datetime = Field(examples=["2026-12-01T10:00:00Z"],
                            description="ISO 8601 (UTC when no offset): events created at or after it.")


class Subscription(BaseModel):
    """A subscription, without its secrets; ``deliveries`` counts its deliveries by state."""

    model_config = ConfigDict(extra="allow")

    id: int
    kind: str
    url: str
    state: str
    event_types: list[str] | None
    providers: list[str] | None
    labels: dict[str, str] | None
    deliveries: dict[str, int]


class SubscriptionCreated(Subscription):
    """A new subscription with its signing secret: shown this once."""

    secret: str


class SubscriptionList(BaseModel):
    """Every subscription."""

    data: list[Subscription]


class NewSecret(BaseModel):
    """The new signing secret, shown this once."""

    id: int
    secret: str
    previous_secret_expires_at: str | None = Field(description="Until then the old secret signs too.")


class TestResult(BaseModel):
    """What the subscriber answered to the test event."""

    webhook_id: str = Field(description="The test event's id (its `webhook-id`).")
    ok: bool
    status_code: int | None
    latency_ms: float
    error: str | None
    response_excerpt: str | None


class Recovered(BaseModel):
    """How many deliveries were queued again (or, already queued, made due now)."""

    queued: int


class DeliveryAttempt(BaseModel):
    """One try at a delivery."""

    model_config = ConfigDict(extra="allow")

    attempted_at: str
    status_code: int | None
    latency_ms: float
    outcome: str
    error: str | None


class Delivery(BaseModel):
    """One event to one subscription, with every attempt (oldest first)."""

    model_config = ConfigDict(extra="allow")

    id: int
    event_id: str
    event_type: str
    subscription_id: int
    state: str
    attempts: list[DeliveryAttempt]
    next_attempt_at: str | None


class DeliveryPage(BaseModel):
    """A page of deliveries, newest first; follow ``next_cursor`` until it is null."""

    data: list[Delivery]
    next_cursor: str | None


def _one(svc: Services, sub_id: int) -> dict[str, Any]:
    return subscription_dict(*svc.subscriptions.get(sub_id))


@router.post("/v1/subscriptions", status_code=201, response_model=SubscriptionCreated,
             responses=_CONFLICT, dependencies=[Writer])
def create_subscription(body: SubscriptionIn, svc: Services) -> dict[str, Any]:
    """Subscribe a webhook endpoint. The answer carries its signing secret, shown only here. The
    same URL with the same filters again is a 409 naming the subscription that has them."""
    sub, secret = svc.subscriptions.add(body.url, types=body.types, providers=body.providers, labels=body.labels)
    return {**subscription_dict(sub, {}), "secret": secret}


@router.get("/v1/subscriptions", response_model=SubscriptionList, dependencies=[Reader])
def list_subscriptions(svc: Services) -> dict[str, Any]:
    """Every subscription (the SQL sink too), with its deliveries counted by state; no secrets."""
    return {"data": [subscription_dict(s, c) for s, c in svc.subscriptions.all()]}


@router.get("/v1/subscriptions/{sub_id}", response_model=Subscription, dependencies=[Reader])
def get_subscription(sub_id: int, svc: Services) -> dict[str, Any]:
    """One subscription with its deliveries counted by state."""
    return _one(svc, sub_id)


@router.patch("/v1/subscriptions/{sub_id}", response_model=Subscription, responses=_CONFLICT,
              dependencies=[Writer])
def patch_subscription(sub_id: int, body: SubscriptionPatch, svc: Services) -> dict[str, Any]:
    """Change the URL or filters (null or empty clears a filter), or disable or enable it."""
    given = body.model_fields_set
    svc.subscriptions.change(
        sub_id, url=body.url, enabled=body.enabled,
        types=body.types if "types" in given else KEEP,
        providers=body.providers if "providers" in given else KEEP,
        labels=body.labels if "labels" in given else KEEP)
    return _one(svc, sub_id)


@router.delete("/v1/subscriptions/{sub_id}", status_code=204, dependencies=[Writer])
def delete_subscription(sub_id: int, svc: Services) -> Response:
    """Delete a subscription with its queued deliveries and their history; events stay."""
    svc.subscriptions.remove(sub_id)
    return Response(status_code=204)


@router.post("/v1/subscriptions/{sub_id}/rotate-secret", response_model=NewSecret, responses=_CONFLICT,
             dependencies=[Writer])
def rotate_secret(sub_id: int, svc: Services) -> dict[str, Any]:
    """A new signing secret, shown only here. The old one keeps signing beside it (two
    signatures per request) for POLLER_WEBHOOK_SECRET_GRACE, so the receiver can switch over."""
    secret = svc.subscriptions.rotate_secret(sub_id, timedelta(seconds=svc.secret_grace_s))
    return {"id": sub_id, "secret": secret,
            "previous_secret_expires_at": _one(svc, sub_id)["previous_secret_expires_at"]}


@router.post("/v1/subscriptions/{sub_id}/test", response_model=TestResult, responses=_CONFLICT,
             dependencies=[Writer])
def test_subscription(sub_id: int, svc: Services) -> dict[str, Any]:
    """Send a signed `test` event now and say what the endpoint answered. It is outside every
    item's order and not in the event stream: not stored, not retried, no effect on the
    subscription's health. A URL the webhook rules refuse is a 409 naming `url`."""
    r = svc.subscriptions.send_test(sub_id)
    return {"webhook_id": r.webhook_id, "ok": r.ok, "status_code": r.status_code, "latency_ms": r.latency_ms,
            "error": r.error, "response_excerpt": r.response_excerpt}


@router.post("/v1/subscriptions/{sub_id}/recover", response_model=Recovered, responses=_CONFLICT,
             dependencies=[Writer])
def recover_subscription(sub_id: int, body: RecoverIn, svc: Services) -> dict[str, Any]:
    """Send again what failed for good to this subscription for events since `since`, in event
    order, with the same `webhook-id` (receivers dedupe); a disabled subscription is a 409."""
    return {"queued": svc.subscriptions.recover(sub_id, body.since)}


@router.get("/v1/deliveries", response_model=DeliveryPage, tags=["deliveries"], dependencies=[Reader])
def list_deliveries(
    svc: Services,
    event_id: Annotated[str | None, Query(description="Only this event's deliveries.")] = None,
    subscription_id: Annotated[int | None, Query(description="Only this subscription's deliveries.")] = None,
    status: Annotated[str | None, Query(description=f"Only deliveries in this state: {', '.join(DELIVERY_STATES)}.")]
    = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> dict[str, Any]:
    """Deliveries, newest first, each with every attempt: time, status code, latency, outcome,
    response excerpt or error."""
    views, nxt = svc.subscriptions.delivery_page(event_id=event_id, subscription_id=subscription_id, status=status,
                                                 cursor=cursor, limit=limit)
    return {"data": [delivery_dict(v) for v in views], "next_cursor": nxt}
