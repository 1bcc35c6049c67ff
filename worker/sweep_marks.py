"""The pure part of an incremental sweep: which listed entries are news, and where the next
sweep starts.

A provider's change list is read from a watermark (the newest modification time already read)
minus an overlap, with an inclusive filter (``LastModified ge …``). The overlap is there because
a modification time is stamped when the provider's write begins, not when it becomes visible: a
change stamped just before the watermark can appear after a sweep read past it. Every entry read
within the overlap is remembered by reference and time, so it is acted on once; an entry that
appears later in that window, or with a new time, is still news. Times are compared as the
provider writes them (parsed, zone-less), never against our clock, so a provider in another zone
or with a clock that drifts loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class SweepEntry:
    """One entry of a provider's change list: an item and when the provider last modified it."""

    kind: str
    ref: str
    #: Verbatim, as the provider wrote it.
    modified: str
    #: The same moment parsed, for ordering.
    modified_key: datetime
    #: The entry's own fields, as listed (a discovery filter reads them).
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        """What identifies this version of the entry: its kind and reference, and its time."""
        return f"{self.kind}:{self.ref}", self.modified_key.isoformat()


@dataclass(frozen=True)
class Mark:
    """Where a sweep starts: the watermark and the entries already read within the overlap."""

    watermark: str | None = None
    key: datetime | None = None
    seen: frozenset[tuple[str, str]] = frozenset()

    def to_json(self) -> str:
        """The entries read within the overlap, as stored."""
        return json.dumps(sorted(self.seen))


def load_mark(watermark: str | None, seen_json: str | None, parse: Callable[[str], datetime]) -> Mark:
    """The stored mark; an unreadable list only costs one more poll of each entry in the overlap."""
    if watermark is None:
        return Mark()
    try:
        pairs = json.loads(seen_json or "[]")
    except ValueError:
        pairs = []
    seen = frozenset((str(p[0]), str(p[1])) for p in pairs if isinstance(p, list) and len(p) == 2) \
        if isinstance(pairs, list) else frozenset()
    return Mark(watermark, parse(watermark), seen)


def news(entries: Iterable[SweepEntry], mark: Mark) -> list[SweepEntry]:
    """The entries not already acted on: every version of an entry is news once."""
    return [e for e in entries if e.key not in mark.seen]


def advance(mark: Mark, entries: Sequence[SweepEntry], overlap: timedelta) -> Mark:
    """The mark after reading ``entries`` (every page of one sweep, in any order): the newest time
    read, and what was read within ``overlap`` of it."""
    newest = max(entries, key=lambda e: e.modified_key, default=None)
    if newest is None or (mark.key is not None and newest.modified_key <= mark.key):
        watermark, key = mark.watermark, mark.key
    else:
        watermark, key = newest.modified, newest.modified_key
    if key is None:
        return mark
    floor = (key - overlap).isoformat()
    seen = {k for k in mark.seen if k[1] >= floor} | {e.key for e in entries if e.key[1] >= floor}
    return Mark(watermark, key, frozenset(seen))
