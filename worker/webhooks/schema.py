"""The event body's JSON Schema (docs/event.schema.json): written by hand, but for the provider
enum of item events, which is the registry's names.

After adding a provider, ``python -m worker.webhooks.schema`` rewrites that enum in the file;
``--check`` (and a test) fails while the file is out of date. Only the enum's list changes: the
rest of the file, its formatting included, is left as written.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: The published schema, in a checkout.
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "event.schema.json"

#: Where the provider enum is in the document.
PROVIDER_PATH = ("$defs", "itemEvent", "properties", "provider", "enum")

# The item events' `"provider": {"enum": [...]}`; the provider events' is a plain string.
_PROVIDER_ENUM = re.compile(r'("provider":\s*\{\s*"enum":\s*)\[[^\]]*\]')


def with_providers(text: str, providers: Iterable[str]) -> str:
    """``text``, the schema's JSON, with the item events' provider enum set to ``providers``. Pure.

    Raises:
        ValueError: ``text`` holds no such enum, or more than one.
    """
    names = list(providers)
    out, found = _PROVIDER_ENUM.subn(lambda m: m.group(1) + json.dumps(names), text)
    if found != 1:
        raise ValueError(f'expected one `"provider": {{"enum": [...]}}` in the schema, found {found}')
    node: Any = json.loads(out)
    for key in PROVIDER_PATH:
        node = node.get(key) if isinstance(node, dict) else None
    if node != names:  # the pattern matched somewhere else than PROVIDER_PATH
        raise ValueError(f"the provider enum is not at {'/'.join(PROVIDER_PATH)}")
    return out


def event_schema(providers: Iterable[str], text: str | None = None) -> dict[str, Any]:
    """The schema document with ``providers`` in the enum (``text``: the file's, by default)."""
    document: dict[str, Any] = json.loads(with_providers(
        SCHEMA_FILE.read_text(encoding="utf-8") if text is None else text, providers))
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite docs/event.schema.json's provider enum from the registry (``--check``: only say
    whether it is up to date, exiting 1 when not)."""
    from worker.providers.registry import REGISTRY

    args = list(sys.argv[1:] if argv is None else argv)
    current = SCHEMA_FILE.read_text(encoding="utf-8")
    wanted = with_providers(current, REGISTRY)
    if wanted == current:
        return 0
    if "--check" in args:
        print(f"{SCHEMA_FILE}: the provider enum is not the registry's {list(REGISTRY)}; "
              "run `python -m worker.webhooks.schema`", file=sys.stderr)
        return 1
    SCHEMA_FILE.write_text(wanted, encoding="utf-8")
    print(f"{SCHEMA_FILE}: provider enum set to {list(REGISTRY)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
