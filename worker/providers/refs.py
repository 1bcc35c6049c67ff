"""Item references: checked at track time, and encoded as exactly one path segment when used.

A ref goes into request paths next to our credentials, so ``..`` or ``a/b`` must never reach a
URL as path structure (the request would go, authenticated, to another resource).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from worker.errors import InputError

#: Longest ref we store (``items.ref`` is 200 characters).
MAX_REF = 200

#: Characters no id of any provider has and that mean something in a path or its encoding.
_PATH_SYNTAX = set("/\\%")


def _bad_character(ref: str, *, allow_spaces: bool) -> str | None:
    for ch in ref:
        if unicodedata.category(ch).startswith("C"):
            return f"a control character ({ch!r})"
        if ch.isspace() and not (allow_spaces and ch == " "):
            return "whitespace"
    return None


def check_ref(provider: str, kind: str, ref: str, *, in_path: bool, max_len: int = MAX_REF,
              pattern: re.Pattern[str] | None = None, expected: str = "") -> str:
    """A ref with surrounding whitespace removed, or InputError naming the ref and the problem.

    Refused everywhere: empty, longer than ``max_len``, control characters. In a path segment
    (``in_path``) also: any whitespace, ``/``, ``\\``, ``%`` and dot-only refs (``.``, ``..``).
    ``pattern`` (full match), when given, is what the provider's ids look like (``expected`` says so).
    """
    text = ref.strip()
    problem: str | None = None
    if not text:
        problem = "is empty"
    elif len(text) > max_len:
        problem = f"is longer than {max_len} characters"
    elif bad := _bad_character(text, allow_spaces=not in_path):
        problem = f"contains {bad}"
    elif in_path and (_PATH_SYNTAX & set(text)):
        problem = "contains '/', '\\' or '%'"
    elif in_path and set(text) == {"."}:
        problem = "is a path step ('.' or '..')"
    elif pattern is not None and not pattern.fullmatch(text):
        problem = f"is not {expected or 'a valid id'}"
    if problem:
        raise InputError(f"{provider} {kind} ref {problem}, got {ref!r}")
    return text


def segment(provider: str, kind: str, ref: str) -> str:
    """``ref`` encoded as one path segment, checked again (rows may predate the track-time check).

    Raises:
        InputError: the ref cannot be one path segment (``..``, ``a/b`` ...).
    """
    check_ref(provider, kind, ref, in_path=True)
    return quote(ref, safe="")
