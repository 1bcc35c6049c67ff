"""Delivery claims are split into task chunks without ever splitting one item's chain."""

from __future__ import annotations

from worker.delivery import chunk_by_chain
from worker.store.delivery_claims import DeliveryClaim


def test_a_chain_never_spans_two_chunks():
    """claim_due lists heads first and their followers after them: a head and its follower must
    still land in one chunk (in two, they would be sent in parallel and could arrive out of order)."""
    heads = [DeliveryClaim(n, 1, (1, n)) for n in range(1, 6)]
    followers = [DeliveryClaim(100 + n, 1, (1, n)) for n in range(1, 6)]
    system = DeliveryClaim(200, 1)  # no item: a chain of its own
    chunks = chunk_by_chain([*heads, *followers, system], 4)
    assert all(len(c) <= 4 for c in chunks)
    where = {c.delivery_id: n for n, chunk in enumerate(chunks) for c in chunk}
    assert all(where[n] == where[100 + n] for n in range(1, 6))
    for chunk in chunks:  # each chain keeps its order: head before follower
        ids = [c.delivery_id for c in chunk]
        assert all(ids.index(n) < ids.index(100 + n) for n in range(1, 6) if n in ids)
    assert sorted(where) == sorted([*range(1, 6), *range(101, 106), 200])


def test_claims_compare_without_their_chain():
    assert DeliveryClaim(1, 2, (3, 4)) == DeliveryClaim(1, 2)
