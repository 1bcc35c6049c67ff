"""When a sweep may store a provider's list entry as the item's new snapshot, instead of polling it.

A change list (Billit's ``GET /v1/orders?$filter=LastModified ge …``) may carry the whole order,
and then the item's own call would only fetch again what the list already said: the sweep stores
the listed document exactly as a poll stores its answer. But no provider document promises that
a list entry carries everything the item call does, and an implementation whose list leaves out
a field would make every item flap between the list's version and the item call's. So the list is
believed only when it shows a change, at a newer version than the one stored, and loses nothing
the stored snapshot showed; otherwise the item is polled, which is what a sweep did before it
could store anything (an item listed at the very version already read needs neither):

- no snapshot yet: the first one comes from the item's own call;
- the listed document equals the snapshot: the provider changed something the list does not
  show (the entry is news, since its modification time moved), so only a poll can see it;
- the listed document drops or empties what the snapshot showed (a delivery, messages): the
  list is thinner than the item call, and the poll is the truth;
- the listed version is older than the stored one: the page was read before a poll stored a
  newer answer, or the list lags behind the item call (or the provider's clocks disagree), and
  only the poll can say which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.domain import StatusDocument
from worker.errors import PollerError


@dataclass(frozen=True)
class Listed:
    """One item as a change list showed it: the version it was listed at, and its document when
    the entry carries all the item's own read does (None: the item can only be made due)."""

    version: str | None
    doc: StatusDocument | None = None


@dataclass
class ListedReport:
    """What storing a sweep's listed items did: items stored (``events`` written), items made due
    instead (to be polled), items listed at a version already read (left alone)."""

    stored: int = 0
    due: int = 0
    seen: int = 0
    events: list[str] = field(default_factory=list)


def storable(previous: StatusDocument | None, listed: StatusDocument) -> bool:
    """True when ``listed`` may be stored as the item's new snapshot without polling it."""
    if previous is None:
        return False
    if (listed.status, listed.terminal, listed.fields) == (previous.status, previous.terminal, previous.fields):
        return False
    return keeps(previous.fields, listed.fields)


def compare(listed: str | None, stored: str | None, parse: Callable[[str], Any] | None) -> int | None:
    """How the version an item was listed at compares with its stored one: 1 newer, 0 the same,
    -1 older, None unknown (a version missing, no ``parse`` to order them, or one that does not
    parse). ``parse`` reads the provider's modification times, so one time written two ways is
    the same version.

    >>> from datetime import datetime
    >>> compare("2026-12-02T10:00:01", "2026-12-02T10:00:00.5", datetime.fromisoformat)
    1
    >>> compare("2026-12-02T10:00:00.50", "2026-12-02T10:00:00.5", datetime.fromisoformat)
    0
    """
    if listed is None or stored is None:
        return None
    if listed == stored:
        return 0
    if parse is None:
        return None
    try:
        a, b = parse(listed), parse(stored)
    except (ValueError, TypeError, PollerError):
        return None
    return int(a > b) - int(a < b)


def keeps(before: Any, after: Any) -> bool:
    """True when ``after`` still shows everything ``before`` showed: no key dropped or emptied,
    no list shorter or with an element thinned. A value that changed is a change, not a loss.

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
        # Each element shown before is still there, kept whole (matched one to one: new elements
        # may sort in between, and a list of thinner elements of the same length is a loss too).
        if not isinstance(after, list) or len(after) < len(before):
            return False
        left = list(after)
        for element in before:
            match = next((n for n, candidate in enumerate(left) if keeps(element, candidate)), None)
            if match is None:
                return False
            del left[match]
        return True
    return True


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)
