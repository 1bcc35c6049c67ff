"""The structural diff of normalized documents."""

from __future__ import annotations

import pytest

from worker.diff import diff_fields
from worker.domain import Change


@pytest.mark.parametrize(("old", "new", "expected"), [
    ({"a": 1}, {"a": 1}, []),
    ({"a": 1}, {"a": 2}, [Change("a", 1, 2)]),
    ({"a": {"b": "x"}}, {"a": {"b": "y"}}, [Change("a.b", "x", "y")]),
    ({"a": None}, {"a": {"b": 1}}, [Change("a", None, {"b": 1})]),
    ({}, {"a": 1}, [Change("a", None, 1)]),
    ({"a": 1}, {}, [Change("a", 1, None)]),
    ({"m": [1]}, {"m": [1, {"d": "PD"}]}, [Change("m[1]", None, {"d": "PD"})]),
    ({"m": [1, 2]}, {"m": [1]}, [Change("m[1]", 2, None)]),
    ({"m": [{"t": 1}]}, {"m": [{"t": 2}]}, [Change("m[0].t", 1, 2)]),
    ({"a": 1}, {"a": True}, [Change("a", 1, True)]),
    ({"a": 1}, {"a": 1.0}, []),
    ({"a": "1"}, {"a": 1}, [Change("a", "1", 1)]),
    ({"a": [1]}, {"a": {"0": 1}}, [Change("a", [1], {"0": 1})]),
    ({"b": 1, "a": 1}, {"b": 2, "a": 2}, [Change("a", 1, 2), Change("b", 1, 2)]),
])
def test_diff_fields(old, new, expected):
    """Leaf-level changes with dotted paths and list indices, in a stable order."""
    assert diff_fields(old, new) == expected


def test_a_b_a_gives_two_changes():
    """Compared with the latest snapshot only: a return to an earlier value is a change."""
    a, b = {"s": "A"}, {"s": "B"}
    assert diff_fields(a, b) == [Change("s", "A", "B")]
    assert diff_fields(b, a) == [Change("s", "B", "A")]


def test_change_wire_form():
    """Changes serialize as {path, from, to}."""
    assert Change("a.b", 1, 2).to_dict() == {"path": "a.b", "from": 1, "to": 2}
