"""Event ids."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from worker.ids import event_id

NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


def test_event_id_layout_and_order():
    """evt_ + 26 Crockford characters, sortable by time."""
    a = event_id(NOW, bytes(10))
    b = event_id(NOW + timedelta(milliseconds=1), bytes(10))
    assert a.startswith("evt_") and len(a) == 30 and a < b
    assert event_id(NOW, b"\x01" * 10) != a
