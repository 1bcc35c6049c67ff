"""Issue 14: incremental sweeps of Amili Sweden (ADA) cases, against the simulator's Eve-style
`GET /cases?sort=-_updated&max_results=100&page=N`, on both databases. Each case names two items
(the case by `_id`, the invoice by `debt.invoice_number`); `_updated` has whole seconds, so many
cases share one, and the overlap before the watermark is what keeps each change to one poll."""

from __future__ import annotations

from datetime import UTC

import pytest
from pydantic import SecretStr

from tests.integration.conftest import changed_items, late_poll, next_sweep, poll_due, poller_and_sweeper, sweep_row
from worker.providers.amili_ada import AmiliAdaSettings


@pytest.fixture
def ada(stack, sim, clock):
    """A poller and a sweeper of ADA's default account on the stack's database and clock (both
    clocks at the simulator's wall time, so `_updated` and our first sweep's lookback agree)."""
    clock.now = sim.clock.wall().replace(tzinfo=UTC)
    sim.amili_ada.wall_time = lambda: clock().timestamp()
    settings = AmiliAdaSettings(base_url=sim.url, api_code=SecretStr("sim-ada-api-code"),
                                private_key_file=sim.amili_ada.private_key_path, algorithm="ES512")
    return poller_and_sweeper(stack, clock, "amili_ada", settings)


def list_requests(sim) -> int:
    return sum(1 for entry in sim.request_log if entry[1:] == ("amili_ada", "GET /cases"))


def test_a_sweep_pages_newest_first_and_stops_past_the_watermark(stack, sim, clock, ada):
    poller, sweeper = ada
    cases = [sim.amili_ada.create_case() for _ in range(150)]  # all with one `_updated` second
    numbers = {c: sim.amili_ada.case_body(c)["debt"]["invoice_number"] for c in cases}
    by_id = [poller.track("amili_ada", c, interval_s=3600).id for c in cases[:140]]
    by_number = poller.track("amili_ada", numbers[cases[140]], interval_s=3600, kind="invoice").id
    assert poll_due(poller) == 141
    first = sweeper.run_due()[0]  # a day back: every case, on two pages of 100
    assert (first.outcome, first.pages, first.entries["due"]) == ("ok", 2, 141)
    listed = (first.entries["due"] + first.entries["ignored"]) // 2  # these and the simulator's seeded cases
    assert poll_due(poller) == 141 and changed_items(stack) == []
    mark = sweep_row(stack, "amili_ada").watermark
    assert mark is not None and mark.endswith(" GMT")

    sim.clock.advance(6)  # past the overlap, before the cases' own next stage (10 s)
    for case in cases[:10] + cases[140:141] + cases[-1:]:  # ten by id, the one by number, one untracked
        sim.amili_ada.set_stage(case, 1)
    requests_before = list_requests(sim)
    second = next_sweep(sweeper, clock)
    # Newest first: the 12 changed, then the rest at the old watermark second (read again in the
    # overlap, and skipped), down to the end of the list.
    assert (second.outcome, second.pages, second.entries["due"]) == ("ok", 2, 11)
    assert second.entries["seen"] == 2 * (listed - 12)  # each unchanged case's two entries
    assert sweep_row(stack, "amili_ada").watermark != mark and list_requests(sim) - requests_before == 2
    assert poll_due(poller) == 11 and changed_items(stack) == sorted(by_id[:10] + [by_number])

    third = next_sweep(sweeper, clock)  # nothing new: what the overlap lists again was read already
    assert (third.outcome, third.entries["due"]) == ("ok", 0)
    assert poll_due(poller) == 0


def test_a_page_that_fails_keeps_the_watermark_and_nothing_is_missed(stack, sim, clock, ada):
    poller, sweeper = ada
    cases = [sim.amili_ada.create_case() for _ in range(5)]
    ids = [poller.track("amili_ada", c, interval_s=3600).id for c in cases]
    assert poll_due(poller) == 5 and sweeper.run_due()[0].outcome == "ok" and poll_due(poller) == 5
    mark = sweep_row(stack, "amili_ada").watermark
    sim.clock.advance(6)
    for case in cases[:3]:
        sim.amili_ada.set_stage(case, 1)
    sim.faults.add("amili_ada", "503", count=1)
    failed = next_sweep(sweeper, clock)
    assert failed.outcome == "failed" and "503" in failed.error
    row = sweep_row(stack, "amili_ada")
    assert (row.watermark, row.failures) == (mark, 1)
    clock.now = row.next_at
    again = sweeper.run_due()[0]
    assert (again.outcome, again.entries["due"]) == ("ok", 3)
    assert poll_due(poller) == 3 and changed_items(stack) == ids[:3]


def test_a_poll_under_way_when_the_sweep_lists_its_case_stores_nothing_and_the_next_poll_does(
        stack, sim, clock, ada):
    poller, sweeper = ada
    case = sim.amili_ada.create_case()
    item_id = poller.track("amili_ada", case, interval_s=3600).id
    assert poll_due(poller) == 1 and sweeper.run_due()[0].entries["due"] == 1 and poll_due(poller) == 1
    with late_poll(poller, sim, clock, "amili_ada", case) as reports:  # Amili answers late
        sim.clock.advance(6)
        sim.amili_ada.set_stage(case, 1)  # the case moves on while its old answer is on the way
        assert next_sweep(sweeper, clock).entries["due"] == 1  # the lease moves on
    assert reports[0].lost_lease == 1 and changed_items(stack) == []  # the older answer is not stored
    assert poll_due(poller) == 1 and changed_items(stack) == [item_id]
