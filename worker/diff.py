"""Pure structural diff of normalized status documents.

Compares with the latest snapshot only, so A -> B -> A gives two changes (Huginn's
look-back over 200 events would miss the return to A).
"""

from __future__ import annotations

from typing import Any

from worker.domain import Change


def diff_fields(old: Any, new: Any, path: str = "") -> list[Change]:
    """List every difference between two JSON values, leaf by leaf.

    Objects are compared key by key (paths joined with ``.``), lists index by index (``[i]``);
    an element or key that exists on one side only is reported whole, with ``None`` on the
    other side. Scalars of different JSON types are different even when Python calls them equal
    (``1`` vs ``True``).

    Args:
        old: the previous normalized fields (``None`` when there is no previous snapshot).
        new: the current normalized fields.
        path: the prefix for reported paths (used by the recursion).

    Returns:
        The changes in a stable order (sorted keys, ascending indices).
    """
    if old is new:  # an unchanged poll's document stands for its snapshot (worker.polling): nothing to walk
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append(Change(sub, None, new[key]))
            elif key not in new:
                changes.append(Change(sub, old[key], None))
            else:
                changes.extend(diff_fields(old[key], new[key], sub))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(old):
                changes.append(Change(sub, None, new[i]))
            elif i >= len(new):
                changes.append(Change(sub, old[i], None))
            else:
                changes.extend(diff_fields(old[i], new[i], sub))
        return changes
    if _same(old, new):
        return []
    return [Change(path, old, new)]


def _same(a: Any, b: Any) -> bool:
    # bool is an int subclass: True == 1 must still count as a change.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)
