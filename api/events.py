"""`/v1/events`: the change events, in stream order, page by page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import PROBLEMS, Reader, Services, json_body
from worker.domain import ALL_EVENT_TYPES
from worker.errors import InputError
from worker.views import event_dict

router = APIRouter(prefix="/v1/events", tags=["events"], responses=PROBLEMS)


class Event(BaseModel):
    """A change event, as `poller events --json` prints it and webhooks carry it."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(examples=["evt_01JDQ3Y7R4M5ZQ8N2C6V1B9XKP"])
    type: str = Field(examples=["status.changed"])
    created_at: str | None
    item_id: int | None = Field(description="The item's id; null for provider-level events.")
    seq: int | None = Field(description="The event's number within its item (1, 2, ...).")
    data: dict[str, Any] = Field(description="Provider, ref, status, changes; `labels` and `external_id` "
                                             "of the item as they were when the event was written.")


class EventPage(BaseModel):
    """A page of events. Pass ``next_cursor`` as ``after`` to go on; ``has_more`` says whether
    more are there now (later calls with the same cursor return what is written meanwhile)."""

    data: list[Event]
    next_cursor: str | None
    has_more: bool


@router.get("", dependencies=[Reader], responses={
    200: {"model": EventPage, "description": "A page of events."},
    410: {**PROBLEMS[404], "description": "`after` is from before the retained events (retention removed "
                                          "events after it); the detail names the oldest retained event."}})
def list_events(
    svc: Services,
    after: Annotated[str | None, Query(description="An event id: start after it (from the start when left out).")]
    = None,
    item_id: Annotated[int | None, Query(description="Only this item's events.")] = None,
    type: Annotated[list[str], Query(description="Only these types; repeat for several.")] = [],  # noqa: A002,B006
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> Response:
    """Events in stream order, the order `poller events` prints. Pass `next_cursor` as `after`
    to go on; it is also where to resume later, so a client can poll this route for new events."""
    for t in type:
        if t not in ALL_EVENT_TYPES:
            raise InputError(f"unknown event type {t!r}; known: {', '.join(ALL_EVENT_TYPES)}", field="type")
    rows, more = svc.feed.page(after=after, limit=limit, item_id=item_id, types=type)
    return json_body({"data": [event_dict(e) for e in rows], "next_cursor": rows[-1].id if rows else after,
                      "has_more": more})


@router.get("/{event_id}", dependencies=[Reader], responses={200: {"model": Event, "description": "The event."}})
def get_event(event_id: str, svc: Services) -> Response:
    """One event (404 when no event has that id)."""
    return json_body(event_dict(svc.feed.get(event_id)))
