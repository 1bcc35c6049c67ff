"""The pure part of a sweep: which entries are news, where the next sweep starts."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from worker.errors import ProviderResponseInvalid
from worker.providers.base import ProviderContext
from worker.providers.billit import BillitProvider, BillitSettings, billit_time, list_entries, parse_billit_time
from worker.sweep_marks import Mark, SweepEntry, advance, load_mark, news


def entry(ref: str, modified: str) -> SweepEntry:
    return SweepEntry("order", ref, modified, parse_billit_time(modified))


OVERLAP = timedelta(seconds=5)


def test_a_first_sweep_takes_everything_and_marks_the_newest():
    page = [entry("1", "2026-12-01T10:00:00.5"), entry("2", "2026-12-01T10:00:01"), entry("3", "2026-12-01T10:00:01")]
    assert news(page, Mark()) == page
    mark = advance(Mark(), page, OVERLAP)
    assert mark.watermark == "2026-12-01T10:00:01"
    assert {ref for ref, _ in mark.seen} == {"order:1", "order:2", "order:3"}


def test_what_was_read_in_the_overlap_is_skipped_and_what_shows_up_late_in_it_is_not():
    first = [entry("2", "2026-12-01T10:00:01"), entry("3", "2026-12-01T10:00:01")]
    mark = advance(Mark(), first, OVERLAP)
    # The next sweep reads from 10:00:01 - 5 s: the same two again, one stamped earlier that only
    # became visible now (its write began before the watermark), one modified again, one newer.
    page = [entry("7", "2026-12-01T09:59:58"), entry("2", "2026-12-01T10:00:01.000"),
            entry("3", "2026-12-01T10:00:01"), entry("3", "2026-12-01T10:00:03"), entry("5", "2026-12-01T10:00:02")]
    assert [(e.ref, e.modified) for e in news(page, mark)] == [
        ("7", "2026-12-01T09:59:58"), ("3", "2026-12-01T10:00:03"), ("5", "2026-12-01T10:00:02")]
    after = advance(mark, page, OVERLAP)
    assert after.watermark == "2026-12-01T10:00:03"
    assert news(page, after) == []  # read again: nothing twice


def test_the_overlap_forgets_what_falls_out_of_it():
    mark = advance(Mark(), [entry("1", "2026-12-01T10:00:00")], OVERLAP)
    later = advance(mark, [entry("2", "2026-12-01T10:00:10")], OVERLAP)
    assert later.seen == {("order:2", "2026-12-01T10:00:10")}


def test_an_empty_sweep_or_an_older_entry_leaves_the_watermark():
    mark = advance(Mark(), [entry("2", "2026-12-01T10:00:01")], OVERLAP)
    assert advance(mark, [], OVERLAP) == mark
    older = advance(mark, [entry("9", "2026-12-01T10:00:00")], OVERLAP)
    assert older.watermark == mark.watermark and ("order:9", "2026-12-01T10:00:00") in older.seen
    assert advance(Mark(), [], OVERLAP) == Mark()


def test_the_stored_mark_round_trips_and_a_damaged_list_costs_only_a_repoll():
    mark = advance(Mark(), [entry("2", "2026-12-01T10:00:01.23")], OVERLAP)
    again = load_mark(mark.watermark, mark.to_json(), parse_billit_time)
    assert again == mark
    damaged = load_mark(mark.watermark, "{not json", parse_billit_time)
    assert damaged.seen == frozenset() and damaged.key == mark.key
    assert load_mark(None, "[]", parse_billit_time) == Mark()


def test_billit_times_parse_with_any_fraction_and_a_zone_goes_to_utc():
    assert parse_billit_time("2025-05-07T14:09:17.563") == datetime(2025, 5, 7, 14, 9, 17, 563000)
    assert parse_billit_time("2025-03-26T14:30:48.11") == datetime(2025, 3, 26, 14, 30, 48, 110000)
    assert parse_billit_time("2025-03-26T14:30:48") == datetime(2025, 3, 26, 14, 30, 48)
    assert parse_billit_time("2025-03-26T14:30:48+01:00") == datetime(2025, 3, 26, 13, 30, 48)
    assert billit_time(datetime(2025, 3, 26, 14, 30, 48, 110000)) == "2025-03-26T14:30:48.110"
    with pytest.raises(ProviderResponseInvalid, match="not a time"):
        parse_billit_time("yesterday")


def test_a_list_page_names_each_order_canonically_and_refuses_what_it_cannot_place():
    page = {"Items": [{"OrderID": 42, "LastModified": "2026-12-01T10:00:00"},
                      {"OrderID": "0043", "LastModified": "2026-12-01T10:00:01"}]}
    assert [(e.ref, e.modified) for e in list_entries(page)] == [("42", "2026-12-01T10:00:00"),
                                                                 ("43", "2026-12-01T10:00:01")]
    for bad, why in (([], "no Items"), ({"Items": [{"LastModified": "x"}]}, "no OrderID"),
                     ({"Items": [{"OrderID": 1}]}, "no LastModified")):
        with pytest.raises(ProviderResponseInvalid, match=why):
            list_entries(bad)


@pytest.mark.parametrize(("base", "link", "path"), [
    ("https://api.billit.be", "https://api.billit.be/v1/orders?$skip=120", "/v1/orders?$skip=120"),
    ("https://gw.example/billit", "https://gw.example/billit/v1/orders?$skip=240", "/v1/orders?$skip=240"),
    ("https://api.billit.be", "/v1/orders?$skip=120", "/v1/orders?$skip=120"),
    ("https://api.billit.be", None, None),
    ("https://api.billit.be", "", None),
])
def test_a_next_page_link_is_followed_on_billits_own_host(base, link, path):
    provider = BillitProvider(BillitSettings(base_url=base, api_key="k", party_id="1"), "default", ProviderContext())
    assert provider._next_page({"NextPageLink": link}) == path


@pytest.mark.parametrize("link", ["https://evil.example/v1/orders?$skip=120", "http://api.billit.be/v1/orders",
                                  "https://api.billit.be:8443/v1/orders", "//evil.example/v1/orders"])
def test_a_next_page_link_to_another_host_is_refused_it_would_carry_our_credentials(link):
    provider = BillitProvider(BillitSettings(base_url="https://api.billit.be", api_key="k", party_id="1"), "default",
                              ProviderContext())
    with pytest.raises(ProviderResponseInvalid, match="another host"):
        provider._next_page({"NextPageLink": link})


def test_two_kinds_with_one_reference_are_two_entries():
    """An Amili case and an invoice whose number happens to equal a case id are not one entry."""
    moment = parse_billit_time("2026-12-01T10:00:01")
    case, invoice = SweepEntry("case", "77", "x", moment), SweepEntry("invoice", "77", "x", moment)
    mark = advance(Mark(), [case], OVERLAP)
    assert news([case, invoice], mark) == [invoice]
