"""Discovery (issue 14): what a sweep finds untracked is tracked, when it passes the account's filter.

With ``POLLER_<P>__DISCOVER=true`` a sweep tracks the items it lists that nobody tracks yet (label
``source=discovered``, the default interval), so an operator does not have to register every
invoice. ``POLLER_<P>__DISCOVER_FILTER`` narrows it, in the OData form Billit documents for its
lists (https://docs.billit.be/docs/odata), evaluated here on each listed entry's own fields:

    OrderDirection eq 'Income' and OrderType eq 'Invoice'

Comparisons are ``eq`` and ``ne`` against a quoted string (``''`` is a quote), a number,
``true``, ``false`` or ``null``, joined by ``and``. A dotted name reads a nested field
(``debt.currency``). Anything else is refused when the settings are read, naming the setting.
The filter is applied on our side and not sent with the sweep: the sweep must still list every
change of the items already tracked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The label every discovered item carries.
DISCOVERED_LABELS = {"source": "discovered"}

_TERM = re.compile(r"""\s*([A-Za-z_][\w.]*)\s+(eq|ne)\s+('(?:[^']|'')*'|-?\d+(?:\.\d+)?|true|false|null)\s*$""")
_AND = re.compile(r"\s+and\s+")


@dataclass(frozen=True)
class Condition:
    """``field op value``."""

    field: str
    op: str
    value: Any

    def holds(self, attrs: Mapping[str, Any]) -> bool:
        """Whether ``attrs`` (an entry's fields) satisfy it; a missing field is null."""
        found: Any = attrs
        for part in self.field.split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        return bool(found == self.value) == (self.op == "eq")


def parse_filter(text: str) -> tuple[Condition, ...]:
    """The conditions of a discovery filter; empty for an empty filter (everything is discovered).

    Raises:
        ValueError: not a conjunction of ``eq``/``ne`` comparisons with a literal, saying which part.
    """
    if not text.strip():
        return ()
    out = []
    for n, part in enumerate(_AND.split(text.strip()), 1):
        match = _TERM.match(part)
        if match is None:
            # Which comparison, not its text: settings messages never quote a value.
            raise ValueError(f"cannot read comparison {n}: use comparisons like OrderType eq 'Invoice' "
                             "(eq or ne, a quoted string, a number, true, false or null), joined by 'and'")
        field, op, literal = match.groups()
        out.append(Condition(field, op, _literal(literal)))
    return tuple(out)


def matches(conditions: Sequence[Condition], attrs: Mapping[str, Any]) -> bool:
    """Whether an entry passes every condition."""
    return all(c.holds(attrs) for c in conditions)


def _literal(text: str) -> Any:
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    return float(text) if "." in text else int(text)
