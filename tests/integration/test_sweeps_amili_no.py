"""Issue 14: sweeps of Amili Norway (collection) invoices, against the simulator's organisation
invoice list, on both databases. Amili documents no "updated since" filter: a sweep reads every
open invoice (`GET /orgs/{org}/invoices?Status=OPEN&PageSize=100`, by PageToken) and makes due the
tracked invoices whose listed document differs from their snapshot, or that left the list."""

from __future__ import annotations

from datetime import UTC

import pytest
from pydantic import SecretStr

from tests.integration.conftest import changed_items, late_poll, next_sweep, poll_due, poller_and_sweeper, sweep_row
from worker.providers.amili_collection import AmiliCollectionSettings


@pytest.fixture
def amili(stack, sim, clock):
    """A poller and a sweeper of Amili Norway's default account on the stack's database and clock."""
    clock.now = sim.clock.wall().replace(tzinfo=UTC)
    settings = AmiliCollectionSettings(base_url=sim.url, auth_url=sim.url, client_id="sim-collection-client",
                                       client_secret=SecretStr("sim-collection-secret"),
                                       org_id=sim.providers["amili_collection"].org_id)
    return poller_and_sweeper(stack, clock, "amili_collection", settings)


def list_requests(sim) -> int:
    return sum(1 for _, label, key in sim.request_log if label == "amili_collection" and key.endswith("/invoices"))


def test_a_sweep_reads_every_open_invoice_and_makes_due_what_changed_or_left(stack, sim, clock, amili):
    poller, sweeper = amili
    fake = sim.providers["amili_collection"]
    invoices = [fake.create_invoice() for _ in range(130)]
    paused = fake.create_invoice(scenario="paused")
    ids = [poller.track("amili_collection", i, interval_s=3600).id for i in invoices[:120]]
    paused_id = poller.track("amili_collection", paused, interval_s=3600).id
    assert poll_due(poller) == 121
    first = sweeper.run_due()[0]  # every open invoice on two pages; nothing differs from its snapshot
    assert (first.outcome, first.pages, first.entries["due"], first.entries["seen"]) == ("ok", 2, 0, 121)
    row = sweep_row(stack, "amili_collection")
    assert row.watermark is None and row.ok_at == clock()

    for invoice in invoices[:5]:  # a reminder now: the listed document differs
        fake.set_stage(invoice, 1)
    fake.set_stage(invoices[5], 4)  # closed: it leaves the open list
    fake.set_stage(paused, 2)  # paused: it leaves the open list too
    fake.set_stage(invoices[-1], 1)  # untracked: nothing to do
    requests_before = list_requests(sim)
    second = next_sweep(sweeper, clock)
    assert (second.outcome, second.entries["due"], second.entries["seen"]) == ("ok", 7, 114)
    assert list_requests(sim) - requests_before == 2
    assert poll_due(poller) == 7 and changed_items(stack) == sorted(ids[:6] + [paused_id])

    third = next_sweep(sweeper, clock)  # the paused one is still not listed, as its snapshot says: not due
    assert (third.outcome, third.entries["due"]) == ("ok", 0)
    assert poll_due(poller) == 0


def test_a_pass_that_fails_midway_makes_nothing_due(stack, sim, clock, amili):
    """Missing from an incomplete pass means nothing: the items after the failed page are not due."""
    poller, sweeper = amili
    fake = sim.providers["amili_collection"]
    invoices = [fake.create_invoice() for _ in range(150)]
    for invoice in invoices:
        poller.track("amili_collection", invoice, interval_s=3600)
    assert poll_due(poller) == 150
    sim.faults.add("amili_collection", "503", count=1, ref="list:2")
    failed = sweeper.run_due()[0]
    assert (failed.outcome, failed.pages, failed.entries["due"]) == ("failed", 1, 0) and "503" in failed.error
    assert poll_due(poller) == 0
    assert sweep_row(stack, "amili_collection").failures == 1



def test_a_poll_under_way_when_the_sweep_finds_its_invoice_changed_stores_nothing_and_the_next_poll_does(
        stack, sim, clock, amili):
    poller, sweeper = amili
    fake = sim.providers["amili_collection"]
    invoice = fake.create_invoice()
    item_id = poller.track("amili_collection", invoice, interval_s=3600).id
    assert poll_due(poller) == 1 and sweeper.run_due()[0].entries["due"] == 0
    with late_poll(poller, sim, clock, "amili_collection", invoice) as reports:  # Amili answers late
        fake.set_stage(invoice, 1)  # the invoice moves on while its old answer is on the way
        assert next_sweep(sweeper, clock).entries["due"] == 1  # the lease moves on
    assert reports[0].lost_lease == 1 and changed_items(stack) == []  # the older answer is not stored
    assert poll_due(poller) == 1 and changed_items(stack) == [item_id]
