"""`/v1/events`: the change events, in stream order, page by page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.app import PROBLEMS, Reader, Services
from worker.domain import ALL_EVENT_TYPES
from worker.errors import InputError
from worker.views import event_dict

router = APIRouter(prefix="/v1/events", tags=["events"], responses=PROBLEMS)


@router.get("", dependencies=[Reader])
def list_events(
    svc: Services,
    after: Annotated[str | None, Query(description="An event id: start after it (from the start when left out).")]
    = None,
    item_id: int | None = None,
    type: Annotated[list[str], Query(description="Only these types; repeat for several.")] = [],  # noqa: A002,B006
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events in stream order, the order `poller events` prints. Pass `next_cursor` as `after`
    to go on; it is also where to resume later, so a client can poll this route for new events."""
    for t in type:
        if t not in ALL_EVENT_TYPES:
            raise InputError(f"unknown event type {t!r}; known: {', '.join(ALL_EVENT_TYPES)}", field="type")
    rows, more = svc.feed.page(after=after, limit=limit, item_id=item_id, types=type)
    return {"data": [event_dict(e) for e in rows], "next_cursor": rows[-1].id if rows else after,
            "has_more": more}


@router.get("/{event_id}", dependencies=[Reader])
def get_event(event_id: str, svc: Services) -> dict[str, Any]:
    """One event."""
    return event_dict(svc.feed.get(event_id))
