"""Pure bookkeeping for following the event stream without missing late commits.

Positions are assigned at insert time, but on PostgreSQL two transactions can commit out of
order: position 7 may become visible after 8. A reader that simply asks for "> 8" would never
see 7. This cursor keeps a hole open until it is filled or has been open for ``grace`` seconds
(a rolled-back insert leaves a permanent hole).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class FollowCursor:
    """Where a follower is. Every position <= ``floor`` has been handled."""

    floor: int = 0
    seen: set[int] = field(default_factory=set)
    holes: dict[int, float] = field(default_factory=dict)

    def accept(self, positions: Iterable[int]) -> list[int]:
        """Return the positions not handled yet (in order) and remember them."""
        fresh = sorted(p for p in positions if p > self.floor and p not in self.seen)
        self.seen.update(fresh)
        return fresh

    def settle(self, now: float, grace: float) -> None:
        """Advance the floor over handled positions and over holes older than ``grace``."""
        top = max(self.seen, default=self.floor)
        for p in range(self.floor + 1, top + 1):
            if p not in self.seen:
                self.holes.setdefault(p, now)
        while self.floor < top:
            nxt = self.floor + 1
            if nxt in self.seen:
                self.seen.discard(nxt)
            elif now - self.holes.get(nxt, now) >= grace:
                self.holes.pop(nxt, None)
            else:
                break
            self.floor = nxt
