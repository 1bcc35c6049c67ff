"""The pure part of an incremental sweep: which listed entries are news, and where the next
sweep starts.

A provider's change list is read from a watermark (the newest modification time already read)
with an inclusive filter (``LastModified ge …``), so entries stamped exactly at the watermark come
back every sweep: the references read at that instant are remembered and skipped, and an entry
that arrives later with that same stamp is still seen. Times are compared as the provider writes
them (parsed, zone-less), never against our clock, so a provider in another zone or with a clock
that drifts loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SweepEntry:
    """One entry of a provider's change list: an item and when the provider last modified it."""

    kind: str
    ref: str
    #: Verbatim, as the provider wrote it: it goes back into the next sweep's filter.
    modified: str
    #: The same moment parsed, for ordering.
    modified_key: datetime


@dataclass(frozen=True)
class Mark:
    """Where a sweep starts: the watermark and the references already read exactly at it."""

    watermark: str | None = None
    key: datetime | None = None
    at_mark: frozenset[str] = frozenset()

    def to_json(self) -> str:
        """The at-mark references, as stored."""
        return json.dumps(sorted(self.at_mark))


def load_mark(watermark: str | None, at_mark_json: str | None, parse: Callable[[str], datetime]) -> Mark:
    """The stored mark; an unreadable at-mark list only costs one more poll of each entry at it."""
    if watermark is None:
        return Mark()
    try:
        refs = json.loads(at_mark_json or "[]")
    except ValueError:
        refs = []
    at_mark = frozenset(str(r) for r in refs) if isinstance(refs, list) else frozenset()
    return Mark(watermark, parse(watermark), at_mark)


def news(entries: Iterable[SweepEntry], mark: Mark) -> list[SweepEntry]:
    """The entries this sweep has not already acted on: newer than the watermark, or at it and
    not read there before."""
    key = mark.key
    return [e for e in entries
            if key is None or e.modified_key > key or (e.modified_key == key and e.ref not in mark.at_mark)]


def advance(mark: Mark, entries: Sequence[SweepEntry]) -> Mark:
    """The mark after reading ``entries`` (every page of one sweep, in any order)."""
    newest = max(entries, key=lambda e: e.modified_key, default=None)
    if newest is None or (mark.key is not None and newest.modified_key < mark.key):
        return mark
    at = {e.ref for e in entries if e.modified_key == newest.modified_key}
    if mark.key == newest.modified_key:
        at |= mark.at_mark
    return Mark(newest.modified, newest.modified_key, frozenset(at))
