"""Stored JSON is read with msgspec (worker.documents.loads_stored: a page of 1,000 events read
twice as fast as with json), exactly as stored, on either database: a provider's integer past 64
bits stays that integer (orjson, tried first, read it as a float), and what msgspec refuses but
json reads still comes back."""

from __future__ import annotations

import json

from sqlalchemy import select

from worker.documents import loads_stored
from worker.store import repo
from worker.store.db import make_sessionmaker
from worker.store.models import Snapshot

WIDE = {"amount": 123456789012345678901234567890, "share": 0.1, "name": "Ærlig Øl AS", "nested": [[{"n": -1}]]}


def test_a_document_orjson_refuses_is_read_back_whole(engine, clock):
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        item = repo.add_item(s, provider="billit", account="default", kind="order", ref="1", interval_s=60,
                             now=clock())
        s.add(Snapshot(item_id=item.id, taken_at=clock(), status="open", terminal=False, fields=WIDE, raw=WIDE))
    with sessions.begin() as s:
        fields, raw = s.execute(select(Snapshot.fields, Snapshot.raw)).one()
    assert fields == WIDE and raw == WIDE and type(fields["amount"]) is int


def test_loads_stored_reads_what_json_reads():
    for text in ('{"a":1}', b'{"a":[1,2.5,"\\u00e6"]}', "18446744073709551616", "[-9223372036854775809]",
                 '{"a":1,"a":2}', "1e400"):  # a repeated key: the last; 1e400: msgspec refuses, json reads inf
        assert loads_stored(text) == json.loads(text)
