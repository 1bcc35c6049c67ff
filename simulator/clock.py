"""Simulated time shared by every fake provider.

Providers never read the wall clock: everything they report (stages, timestamps)
is a function of ``SimClock.now()``, so a test can freeze time (speed 0) and step
it with ``advance`` to get byte-identical answers.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

# Fixed on purpose: timestamps in provider bodies must not depend on when the
# simulator happened to start, or repeated runs would produce different bytes.
DEFAULT_EPOCH = datetime(2025, 5, 7, 14, 0, 0)


class SimClock:
    """A thread-safe clock that runs at ``speed`` times real time and can be stepped."""

    def __init__(self, speed: float = 1.0, epoch: datetime = DEFAULT_EPOCH) -> None:
        _check_speed(speed)
        self._lock = threading.Lock()
        self._speed = float(speed)
        self._offset = 0.0
        self._anchor = time.monotonic()
        self.epoch = epoch

    @property
    def speed(self) -> float:
        """The current rate of simulated seconds per real second."""
        with self._lock:
            return self._speed

    def now(self) -> float:
        """Return simulated seconds elapsed since the clock was created."""
        with self._lock:
            return self._now_locked()

    def advance(self, seconds: float) -> float:
        """Move simulated time forward by ``seconds`` and return the new ``now()``."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards (advance={seconds})")
        with self._lock:
            self._offset += float(seconds)
            return self._now_locked()

    def set_speed(self, speed: float) -> float:
        """Change the rate of time from now on; 0 freezes it. Returns ``now()``."""
        _check_speed(speed)
        with self._lock:
            # Fold the time elapsed at the old speed into the offset so the
            # change never makes simulated time jump.
            self._offset = self._now_locked()
            self._anchor = time.monotonic()
            self._speed = float(speed)
            return self._offset

    def wall(self, sim_seconds: float | None = None) -> datetime:
        """Return the naive wall-clock datetime for a simulated instant (default: now)."""
        if sim_seconds is None:
            sim_seconds = self.now()
        return self.epoch + timedelta(seconds=sim_seconds)

    def _now_locked(self) -> float:
        return self._offset + self._speed * (time.monotonic() - self._anchor)


def _check_speed(speed: float) -> None:
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")


def stage_reached(born: float, now: float, stage_seconds: float, final: int) -> int:
    """The life stage (0..final) of an item born at sim time ``born``, seen at ``now``."""
    # The epsilon absorbs float error so advance(stage_seconds) lands exactly on the next stage.
    return max(0, min(final, int((now - born) / stage_seconds + 1e-9)))


def born_for_stage(stage: object, final: int, now: float, stage_seconds: float, what: str = "") -> float:
    """The birth time that puts an item at ``stage`` now, so it moves on from there.

    Raises:
        ValueError: ``stage`` is not an integer in 0..final (``what`` names the item's kind).
    """
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= final:
        raise ValueError(f"stage must be an integer 0..{final}" + (f" for {what}" if what else ""))
    return now - stage * stage_seconds


def next_stage_at(born: float, now: float, stage_seconds: float, final: int) -> float | None:
    """When an item born at ``born`` reaches its next stage (None once at ``final``)."""
    stage = stage_reached(born, now, stage_seconds, final)
    return None if stage >= final else born + (stage + 1) * stage_seconds
