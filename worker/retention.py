"""What history is kept, and from when it may go (pure: the caller passes ``now``).

The prune itself (`worker.store.prune`) applies these cutoffs in small batches. Whatever the
settings say, it never removes the latest snapshot of a tracked item (the next diff needs it) or
an event a subscriber has not yet received (a delivery still pending for an active subscription).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: The tables a prune touches, in the order it works on them (the metrics' ``table`` label).
TABLES = ("delivery_attempts", "events", "snapshots", "items")


@dataclass(frozen=True)
class Retention:
    """How long each kind of history stays; None keeps it for ever.

    Attributes:
        events_s: events older than this go (with their finished deliveries and attempts).
        snapshots_keep: snapshots kept per item besides its latest.
        attempts_s: delivery attempts older than this go (the delivery's outcome stays).
        finished_items_s: a terminal or gone item, and the history of an untracked one, stays
            this long after its last change.
    """

    events_s: float | None = 30 * 86400.0
    snapshots_keep: int | None = 100
    attempts_s: float | None = 30 * 86400.0
    finished_items_s: float | None = 90 * 86400.0

    def cutoffs(self, now: datetime) -> Cutoffs:
        """The moments before which each kind of history may be removed."""
        def before(seconds: float | None) -> datetime | None:
            return None if seconds is None else now - timedelta(seconds=seconds)

        return Cutoffs(events=before(self.events_s), attempts=before(self.attempts_s),
                       finished_items=before(self.finished_items_s), snapshots_keep=self.snapshots_keep)


@dataclass(frozen=True)
class Cutoffs:
    """Absolute cutoffs of one prune run (None: that kind is kept)."""

    events: datetime | None
    attempts: datetime | None
    finished_items: datetime | None
    snapshots_keep: int | None

