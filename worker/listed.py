"""When a sweep may store a provider's list entry as the item's new snapshot, instead of polling it.

A change list (Billit's ``GET /v1/orders?$filter=LastModified ge …``) may carry the whole order,
and then the item's own call would only fetch again what the list already said: the sweep stores
the listed document exactly as a poll stores its answer. But no provider document promises that
a list entry carries everything the item call does, and an implementation whose list leaves out
a field would make every item flap between the list's version and the item call's. So the list is
believed only when it shows a change and loses nothing the stored snapshot showed; otherwise the
item is polled, which is what a sweep did before it could store anything:

- no snapshot yet: the first one comes from the item's own call;
- the listed document equals the snapshot: the provider changed something the list does not
  show (the entry is news, since its modification time moved), so only a poll can see it;
- the listed document drops or empties what the snapshot showed (a delivery, messages): the
  list is thinner than the item call, and the poll is the truth.
"""

from __future__ import annotations

from typing import Any

from worker.domain import StatusDocument


def storable(previous: StatusDocument | None, listed: StatusDocument) -> bool:
    """True when ``listed`` may be stored as the item's new snapshot without polling it."""
    if previous is None:
        return False
    if (listed.status, listed.terminal, listed.fields) == (previous.status, previous.terminal, previous.fields):
        return False
    return keeps(previous.fields, listed.fields)


def keeps(before: Any, after: Any) -> bool:
    """True when ``after`` still shows everything ``before`` showed: no key dropped or emptied,
    no list shorter. A value that changed is a change, not a loss.

    >>> keeps({"messages": [1, 2], "status": "Sent"}, {"messages": [1, 2, 3], "status": "Paid"})
    True
    >>> keeps({"delivery": {"status": "Delivered"}}, {"delivery": None})
    False
    """
    if _is_empty(before):
        return True
    if _is_empty(after):
        return False
    if isinstance(before, dict):
        return isinstance(after, dict) and all(keeps(value, after.get(key)) for key, value in before.items())
    if isinstance(before, list):
        return isinstance(after, list) and len(after) >= len(before)
    return True


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)
