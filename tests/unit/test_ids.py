"""Event ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.ids import event_id, event_ids

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_event_id_layout_and_order():
    """evt_ + 26 Crockford characters, sortable by time."""
    a = event_id(NOW, bytes(10))
    b = event_id(NOW + timedelta(milliseconds=1), bytes(10))
    assert a.startswith("evt_") and len(a) == 30 and a < b
    assert event_id(NOW, b"\x01" * 10) != a


def test_ids_made_together_sort_in_order():
    """Events written by one poll in one millisecond keep their order in their ids."""
    ids = event_ids(NOW, b"\xff" * 10, 3)
    assert ids == sorted(ids) and len(set(ids)) == 3
