"""Stored rows as JSON objects: one shape for the CLI's --json, the HTTP API and the status page."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from worker.dates import iso_z
from worker.store.models import Event, Item, Snapshot


def item_dict(item: Item) -> dict[str, Any]:
    """An item as a JSON object."""
    return {
        "id": item.id, "provider": item.provider, "account": item.account, "kind": item.kind,
        "ref": item.ref, "interval_seconds": item.interval_s, "state": item.state,
        "labels": dict(item.labels or {}), "external_id": item.external_id,
        "last_status": item.last_status, "last_poll_at": iso_z(item.last_polled_at),
        "last_success_at": iso_z(item.last_success_at), "next_poll_at": iso_z(item.next_poll_at),
        "consecutive_failures": item.consecutive_failures, "failing": item.failing,
        "last_error": item.last_error, "last_error_at": iso_z(item.last_error_at),
        "created_at": iso_z(item.created_at), "updated_at": iso_z(item.updated_at),
    }


def snapshot_dict(snap: Snapshot) -> dict[str, Any]:
    """A stored snapshot: the normalized document, and the provider's body as it came."""
    return {"id": snap.id, "item_id": snap.item_id, "taken_at": iso_z(snap.taken_at), "status": snap.status,
            "terminal": snap.terminal, "fields": snap.fields, "raw": snap.raw}


def event_dict(event: Event | Row[Any]) -> dict[str, Any]:
    """An event: ``id``, ``type``, ``created_at``, ``item_id``, ``seq``, ``data``."""
    return {"id": event.id, "type": event.type, "created_at": iso_z(event.created_at),
            "item_id": event.item_id, "seq": event.seq, "data": event.data}
