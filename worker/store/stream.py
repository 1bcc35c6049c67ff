"""Reading the event stream: positions, cursors and pages. Each takes a Session and only reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.errors import CursorExpired, NotFound
from worker.ids import event_time
from worker.store.models import Event, RetentionMark


def event_position(session: Session, event_id: str) -> int:
    """The stream position of an event id, or NotFound when no event has it."""
    pos = session.scalar(select(Event.position).where(Event.id == event_id))
    if pos is None:
        raise NotFound(f"no event has id {event_id!r}")
    return pos


def oldest_event_at(session: Session) -> datetime | None:
    """When the oldest retained event was created (`poller status`, the metrics). From the
    stream's start, not from past the retention mark: an event a subscriber still waits for is
    kept however old, and may sit before the mark."""
    return session.scalar(select(Event.created_at).order_by(Event.position).limit(1))


def cursor_position(session: Session, after: str | None) -> int:
    """The stream position an events cursor (an event id; None for the start) reads after.

    Raises:
        CursorExpired: the cursor is from before what retention removed; the message names the
            oldest retained event.
        NotFound: no event has that id, and it is not one retention removed.
    """
    if after is None:
        return 0
    mark = session.get(RetentionMark, "events")
    try:
        start = event_position(session, after)
    except NotFound:
        made = event_time(after)
        if mark is None or made is None or made > mark.at:
            raise
        start = -1
    if mark is not None and start < mark.position:
        oldest = session.scalars(select(Event).order_by(Event.position).limit(1)).first()
        where = f"the oldest retained event is {oldest.id}, created {oldest.created_at:%Y-%m-%d %H:%M:%S} UTC" \
            if oldest is not None else "no event is retained"
        raise CursorExpired(f"after {after!r} is before the retained events: events up to "
                            f"{mark.at:%Y-%m-%d %H:%M:%S} UTC were removed by retention (POLLER_RETENTION_EVENTS); "
                            f"{where}. Read again from the start (no after) to continue from it.", field="after")
    return start


def events_after(session: Session, position: int, limit: int = 1000) -> Sequence[Event]:
    """Events after ``position`` in stream order."""
    return session.scalars(select(Event).where(Event.position > position)
                           .order_by(Event.position).limit(limit)).all()
