"""When a sweep believes a provider's list (worker.listed): the pure rules."""

from __future__ import annotations

from datetime import datetime

from worker.domain import StatusDocument
from worker.listed import compare, keeps, storable

BEFORE = StatusDocument("sent", False, {"order_status": "ToPay", "delivery": {"status": "Pending"},
                                        "messages": [{"id": 1, "code": "AB"}]})
PAID = StatusDocument("paid", True, {"order_status": "Paid", "delivery": {"status": "Delivered"},
                                     "messages": [{"id": 1, "code": "AB"}, {"id": 2, "code": "PD"}]})


def test_a_change_that_keeps_all_the_snapshot_showed_is_stored():
    assert storable(BEFORE, PAID)
    assert storable(BEFORE, StatusDocument("sent", False, {**BEFORE.fields, "delivery": {"status": "Error"}}))


def test_no_snapshot_or_nothing_new_is_polled():
    assert not storable(None, PAID)
    assert not storable(BEFORE, BEFORE)


def test_a_list_that_shows_less_is_polled():
    assert not storable(BEFORE, StatusDocument("paid", True, {**PAID.fields, "messages": []}))
    assert not storable(BEFORE, StatusDocument("paid", True, {**PAID.fields, "delivery": None}))
    assert not storable(BEFORE, StatusDocument("paid", True, {"order_status": "Paid", "messages": [{"id": 1}]}))
    # The same number of messages, each thinner than the snapshot's: a loss too.
    assert not storable(BEFORE, StatusDocument("paid", True, {**PAID.fields, "messages": [{"id": 1}, {"id": 2}]}))


def test_elements_are_matched_one_to_one_wherever_new_ones_sort():
    assert keeps([{"id": 2, "code": "B"}], [{"id": 1, "code": "A"}, {"id": 2, "code": "B"}])
    assert not keeps([{"code": "A"}, {"code": "B"}], [{"code": "A"}, {"code": None}])
    assert keeps({"n": 0, "flag": False}, {"n": 0, "flag": False})  # zero and false are values


def test_versions_compare_as_the_provider_s_times():
    parse = datetime.fromisoformat
    assert compare("2026-12-02T10:00:01", "2026-12-02T10:00:00.9", parse) == 1
    assert compare("2026-12-02T10:00:00", "2026-12-02T10:00:00", parse) == 0
    assert compare("2026-12-02T10:00:00.500", "2026-12-02T10:00:00.5", parse) == 0  # one time written two ways
    assert compare("2026-12-02T09:59:59", "2026-12-02T10:00:00", parse) == -1  # older: a lagging list
    assert compare("2026-12-02T10:00:00", None, parse) is None and compare(None, "x", parse) is None
    assert compare("not a time", "2026-12-02T10:00:00", parse) is None
    assert compare("b", "a", None) is None and compare("a", "a", None) == 0
