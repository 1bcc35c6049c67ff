"""Plain UPDATEs of items for tests, as an operator's SQL would do them: the schedule's columns
(``next_poll_at``, ``lease_id``, ...) are a row of ``item_schedules`` (worker.store.schedule)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.sql.elements import ColumnElement

from worker.store.models import Item, Schedule
from worker.store.schedule import SCHEDULE_FIELDS


def update_items(executor: Any, where: ColumnElement[bool] | None = None, **values: Any) -> list[int]:
    """Set ``values`` on the items matching ``where`` (all when None), each on the table that
    holds it; returns the ids of the items changed. ``executor`` is a Session or Connection."""
    query = select(Item.id) if where is None else select(Item.id).where(where)
    ids = list(executor.scalars(query))
    planned = {name: values.pop(name) for name in SCHEDULE_FIELDS if name in values}
    if values:
        executor.execute(update(Item).where(Item.id.in_(ids)).values(**values))
    if planned:
        executor.execute(update(Schedule).where(Schedule.item_id.in_(ids)).values(**planned))
    return ids
