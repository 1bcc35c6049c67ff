"""How far an event page may go while a lower position may still commit (worker.feed.horizon)."""

from __future__ import annotations

import pytest

from worker.feed import horizon


@pytest.mark.parametrize(("positions", "below", "expected"), [
    ([], 0, None),  # nothing recent: everything is safe
    ([1, 2, 3], 0, None),  # the stream from its start, no gap
    ([5, 6, 7], 4, None),  # recent events right after the older ones
    ([2, 3], 0, 0),  # position 1 not committed yet: nothing is safe
    ([5, 7, 8], 4, 5),  # 6 is missing: stop at 5
    ([6, 7], 4, 4),  # the gap is right after the older events
    ([5, 6, 9, 10, 12], 4, 6),  # only the first gap counts
    ([9, 10], None, None),  # nothing known below: the first recent position is taken as it is
    ([9, 11], None, 9),
])
def test_horizon_stops_before_the_first_gap(positions, below, expected):
    assert horizon(positions, below) == expected


def test_horizon_never_hands_out_a_position_after_a_gap():
    """For any set of positions, everything up to the horizon is contiguous and the next one is missing."""
    import random

    rng = random.Random(7)
    for _ in range(500):
        below = rng.randint(0, 20)
        positions = sorted(rng.sample(range(below + 1, below + 30), rng.randint(0, 15)))
        safe = horizon(positions, below)
        present = {below, *positions}
        if safe is None:
            assert positions == list(range(below + 1, below + 1 + len(positions)))
        else:
            assert all(p in present for p in range(below, safe + 1))
            assert safe + 1 not in present and any(p > safe for p in positions)
