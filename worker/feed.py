"""The event stream as pages: what `GET /v1/events` serves, in the order `poller events` prints.

Positions are handed out at insert time, but on PostgreSQL transactions commit out of order:
position 7 may become visible after 8. A page that handed out 8 would make a client following
``after=8`` miss 7 forever. So a page stops before the first hole that may still fill: a missing
position followed by an event younger than ``HOLE_GRACE_S`` (a rolled-back insert leaves a
permanent hole, which is passed once it is that old). SQLite commits one writer at a time, in
position order, and has no such holes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session, sessionmaker

from worker.clock import utcnow
from worker.errors import InputError, NotFound
from worker.store import stream
from worker.store.models import Event, RetentionMark

#: What a page reads of each event (what `worker.views.event_dict` shows, and its position).
PAGE_COLUMNS = (Event.position, Event.id, Event.item_id, Event.seq, Event.type, Event.data, Event.created_at)
#: How long a hole in the positions may still be filled by a commit under way (as `poller events -f`).
HOLE_GRACE_S = 10.0


def horizon(positions: Sequence[int], below: int | None) -> int | None:
    """Pure: the last position that is safe to hand out.

    Args:
        positions: the positions of the recent events (young enough that a hole before one of
            them may still fill), ascending.
        below: the highest position below ``positions[0]`` (0 when the stream starts there;
            None when unknown, so the first recent position is taken as it is).

    Returns:
        The position just before the first gap, or None when there is no gap (all are safe).
    """
    expected = None if below is None else below + 1
    for p in positions:
        if expected is not None and p != expected:
            return expected - 1
        expected = p + 1
    return None


class EventFeed:
    """Pages of events for API clients."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime] = utcnow,
                 hole_grace_s: float = HOLE_GRACE_S) -> None:
        self.sessions, self.clock, self.hole_grace_s = sessions, clock, hole_grace_s

    def page(self, *, after: str | None, limit: int, item_id: int | None = None,
             types: Sequence[str] = ()) -> tuple[list[Row[Any]], bool]:
        """Events after the event ``after`` (from the start when None), in stream order, and
        whether more are available now. Rows with an event's columns, not ``Event`` objects: for
        a page of 1,000, building the objects cost more than reading the rows."""
        with self.sessions.begin() as session:
            try:
                start = stream.cursor_position(session, after or None)
            except NotFound:
                raise InputError(f"after {after!r} names no event; pass an event id from this API",
                                 field="after") from None
            q = select(*PAGE_COLUMNS).where(Event.position > start)
            if item_id is not None:
                q = q.where(Event.item_id == item_id)
            if types:
                q = q.where(Event.type.in_(list(types)))
            safe = self._safe_position(session, start)
            if safe is not None:
                q = q.where(Event.position <= safe)
            rows = list(session.execute(q.order_by(Event.position).limit(limit + 1)))
        return rows[:limit], len(rows) > limit

    def get(self, event_id: str) -> Event:
        """One event by id (NotFound when none has it)."""
        with self.sessions.begin() as session:
            position = stream.event_position(session, event_id)
            event = session.get(Event, position)
            assert event is not None
            return event

    def _safe_position(self, session: Session, start: int) -> int | None:
        if session.get_bind().dialect.name != "postgresql":
            return None
        since = self.clock() - timedelta(seconds=self.hole_grace_s)
        recent = list(session.scalars(select(Event.position).where(Event.created_at >= since,
                                                                    Event.position > start)
                                      .order_by(Event.position)))
        if not recent:
            return None
        below = session.scalar(select(func.max(Event.position)).where(Event.position < recent[0])) or 0
        # Positions a prune removed are not holes that may still fill.
        mark = session.get(RetentionMark, "events")
        if mark is not None and below < mark.position < recent[0]:
            below = mark.position
        return horizon(recent, below)
