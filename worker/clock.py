"""The wall clock of the I/O shell. The pure core takes ``now`` as an argument instead."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The wall clock, in UTC. The default clock of every service."""
    return datetime.now(UTC)
