"""An item's schedule: when it is polled next, and the lease of the poll that holds it.

Its own narrow table (issue 13), not columns of ``items``: every claim and every poll moves the
schedule, and a row whose indexed column changes is rewritten into every index of its table. On
``items`` that was four indexes of a wide row (PostgreSQL could never update an item in place, as
``next_poll_at`` is in the due index); here it is the key and the due index of a row of a few
dozen bytes, which at 1,000,000 items stays in the database's buffers. The item row is then
written only when a poll has something to say, and a quiet poll's write to it changes no indexed
column, so PostgreSQL updates it in place (HOT).

Lock order on PostgreSQL, so two writers never wait on each other in a cycle: an item's schedule
row before its item row. Every writer of both locks the schedules first (``repo.lock_leases``, or
the quiet polls' own UPDATE, worker.store.quiet), then writes the items; the ORM then flushes the
item before its schedule, whose lock it holds already. A claim, a push's ``make_due`` and a
deferral lock only schedules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar, overload

from sqlalchemy import ForeignKey, Index, Integer, String, and_, func
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from worker.store.declarative import Base, partial
from worker.store.types import UTCDateTime

#: An item claimed in this many leases in a row without a completed poll is stuck. The partial
#: index ``ix_item_schedules_stuck`` is built on it: a change needs a migration of that index.
STUCK_AFTER_CLAIMS = 3

#: The columns of an item's schedule, which ``Item`` also offers as attributes of its own.
SCHEDULE_FIELDS = ("next_poll_at", "lease_id", "claims_since_poll", "due_since")


class Schedule(Base):
    """When an item is polled next; one row per item, made and deleted with it.

    Invariant: ``next_poll_at`` is NULL unless the item is active, so the due index holds only
    what may be polled. ``claims_since_poll`` is zero unless the item is active (a poll's write,
    a pause and a finish all reset it), so the stuck index holds only active items.
    """

    __tablename__ = "item_schedules"
    __table_args__ = (
        Index("ix_item_schedules_stuck", "provider",
              **partial(f"claims_since_poll >= {STUCK_AFTER_CLAIMS}")),
    )

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    #: The item's provider (it never changes): the overdue and stuck gauges count by it without
    #: reading the items.
    provider: Mapped[str] = mapped_column(String(40))
    next_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Bumped by every claim; a poll writes only if the lease it was given is still current.
    lease_id: Mapped[int] = mapped_column(Integer, default=0)
    #: Leases handed out since the last completed poll; a few in a row means the item is stuck.
    claims_since_poll: Mapped[int] = mapped_column(Integer, default=0)
    #: When the item first came due and has not been polled since: deferred items keep their place.
    due_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


T = TypeVar("T")


class OnSchedule(Generic[T]):
    """An attribute of an item kept on its schedule row (``item.next_poll_at`` is
    ``item.schedule.next_poll_at``). Named on the class, as a query would, it refuses: the column
    is ``Schedule``'s, and the item's name would silently compare as a Python object."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, item: None, owner: type) -> OnSchedule[T]: ...
    @overload
    def __get__(self, item: object, owner: type) -> T: ...
    def __get__(self, item: object | None, owner: type) -> OnSchedule[T] | T:
        if item is None:
            raise AttributeError(f"{owner.__name__}.{self.name} is a column of item_schedules: "
                                 f"name Schedule.{self.name} in a query")
        value: T = getattr(item.schedule, self.name)  # type: ignore[attr-defined]
        return value

    def __set__(self, item: Any, value: T) -> None:
        setattr(item.schedule, self.name, value)


def polled(next_poll_at: Any) -> dict[str, Any]:
    """The schedule's values once a poll is written: its next poll, the lease used up (a duplicate
    of the claim then writes nothing), no claims outstanding, no longer due. ``next_poll_at`` is a
    value or a bind parameter."""
    return {"next_poll_at": next_poll_at, "lease_id": Schedule.lease_id + 1, "claims_since_poll": 0,
            "due_since": None}


#: The dispatch claim's order: the time each item first came due (a deferred item keeps its place).
#: Never later than ``next_poll_at``: ``due_since`` is only set once the item is due.
DUE_KEY = func.coalesce(Schedule.due_since, Schedule.next_poll_at)
# The due index, in claim order, with next_poll_at beside the key: a claim of 200 reads 200
# entries in order, skipping the items under a lease (due_since old, next_poll_at ahead) within
# the index, instead of reading and sorting every due row (migration 0013: 45-137 ms -> 3 ms
# for 200 of 34,000 due at 1,000,000 items on PostgreSQL).
Index("ix_item_schedules_due", DUE_KEY, Schedule.next_poll_at)


def due_by(moment: datetime, *, strict: bool = False) -> ColumnElement[bool]:
    """``next_poll_at <= moment`` (``<`` when ``strict``), said so that the due index answers it:
    the bound on DUE_KEY is implied (the key is never later than next_poll_at) but is what the
    index is ordered by."""
    if strict:
        return and_(DUE_KEY < moment, Schedule.next_poll_at < moment)  # noqa: SIM300 - DUE_KEY is a column expression
    return and_(DUE_KEY <= moment, Schedule.next_poll_at <= moment)  # noqa: SIM300 - as above
