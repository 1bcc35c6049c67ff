"""Loads the verbatim provider examples under tests/data/ into response bodies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("data")


def billit_order(fragment: str | None, **members: Any) -> dict[str, Any]:
    """A Billit order body: ``members`` plus the members of a seed fragment file.

    The seed's fragments are ``"Key": value,`` lists; one has a trailing comma inside a list, as
    published. Only that comma is repaired.
    """
    body = dict(members)
    if fragment:
        text = (DATA / "billit" / fragment).read_text().strip().rstrip(",")
        if text.endswith("}") and text.count("{") < text.count("}"):
            text = text[:-1]  # the example closes the order object itself
        text = re.sub(r",(\s*[\]}])", r"\1", "{" + text + "}")
        body.update(json.loads(text))
    return body
