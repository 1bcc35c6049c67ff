"""Write docs/configuration.md from the settings model, so the settings page cannot drift.

    .venv/bin/python scripts/config_doc.py           # rewrite docs/configuration.md
    .venv/bin/python scripts/config_doc.py --check   # exit 1 when the page is out of date

It walks ``config.settings.Settings`` recursively: every field becomes a row with the environment
variable pydantic-settings reads (``POLLER_`` prefix, ``__`` between nested names), its type and
constraints, its default and what it does. Nested models (each provider's settings) become
sections; a dict field (a provider's ``accounts``) becomes one row with a ``<NAME>`` placeholder.
Nothing here names a provider: whatever the model holds is what the page shows.

A field's description is, first found: its ``Field(description=...)``; an entry of
``DESCRIPTIONS`` below (for fields whose ``#:`` comment is missing or covers a group); the ``#:``
comment above the field in its class's source.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen  # noqa: E402
from pydantic import BaseModel, SecretStr  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

#: The generated page.
OUTPUT = ROOT / "docs" / "configuration.md"

#: Descriptions for fields that have no ``#:`` comment of their own, or whose comment introduces a
#: group: ``class -> field -> text``, the class being the model or any class of its MRO. A test
#: fails when an entry names no field.
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Settings": {
        "home": "Where the embedded defaults live: the SQLite file, the embedded Redis, beat's state, `secret.key`, "
                "metrics directories.",
        "database_url": "SQLAlchemy URL, e.g. `postgresql+psycopg://user:pw@host/db`; unset: the SQLite file "
                        "`$POLLER_HOME/poller.db`.",
        "broker_url": "Celery broker, e.g. `redis://host:6379/0`; unset: `poller run` starts an embedded Redis "
                      "(`poller worker` and `poller beat` need it set).",
        "secret_keys": "Fernet keys that encrypt the secrets stored in the database, comma-separated, newest first; "
                       "unset: `$POLLER_HOME/secret.key`, made once for SQLite. Required with a shared database "
                       "([deployment](deployment.md#secrets-at-rest)).",
        "tick_seconds": "How often beat runs `dispatch_due` (and `deliver_due`).",
        "lease_seconds": "How long a claimed poll may take before the item is claimed again; more than half a tick.",
        "dispatch_limit": "Most items claimed in one tick (the most overdue first).",
        "dispatch_chunk": "Items per `poll_items` task.",
        "default_interval_seconds": "Poll interval when `track` (or the API) gives none.",
        "failing_after": "Consecutive failures before `poll.failing`.",
        "backoff_base_seconds": "First retry delay after a failure (doubling, with jitter).",
        "backoff_max_seconds": "The backoff cap; also the wait after a failure no retry can fix.",
        "jitter_ratio": "Spread of the regular interval: a success reschedules at the interval less up to this share.",
        "http_timeout_seconds": "Total deadline of every provider call (connect, headers and body).",
        "max_body_bytes": "Larger provider responses are an error.",
        "breaker_window_seconds": "Circuit breaker, per provider account: its counting window.",
        "breaker_min_calls": "Calls in the window before the breaker may open.",
        "breaker_failure_ratio": "Failing share (timeouts, 5xx, 429) that opens the breaker.",
        "breaker_cooldown_seconds": "First pause of an open breaker; doubles on each failed probe.",
        "breaker_max_cooldown_seconds": "Longest pause of an open breaker.",
        "webhook_allow_http": "Allow `http://` webhook targets (tests, local receivers).",
        "webhook_allow_private": "Allow loopback and private webhook targets (link-local and cloud-metadata addresses "
                                 "stay refused).",
        "webhook_timeout_seconds": "Total deadline of one webhook send (connect, headers and body); slower is a "
                                   "failed attempt.",
        "webhook_retry_jitter_ratio": "Spread (±) of each retry step.",
        "delivery_lease_seconds": "A claimed delivery not recorded by then is retried.",
        "delivery_chunk": "Deliveries per `deliver` task.",
        "delivery_limit": "Most deliveries claimed in one tick.",
        "sink_table": "The SQL sink's table.",
        "retention_events": "Events older than this are removed (with their finished deliveries), unless a subscriber "
                            "still waits for one; `0` or `forever` keeps them ([operations](operations.md#retention)).",
        "retention_snapshots_keep": "Snapshots kept per item besides its latest (`0` or `forever`: all).",
        "retention_attempts": "Delivery attempts older than this are removed (a delivery still retrying keeps its "
                              "own).",
        "retention_finished_items": "A terminal or gone item, and an untracked item's events, stay this long after "
                                    "the last change.",
        "beat_metrics_port": "Prometheus `/metrics` port of `poller beat` (0 turns it off).",
        "metrics_port": "Prometheus `/metrics` port of `poller worker` (0 turns it off).",
        "api_addr": "Address the HTTP API listens on (`poller api`, `poller run`).",
        "api_port": "Port of the HTTP API (0 picks a free one).",
        "log_format": "`console` (readable) or `json` (production, compose).",
        "log_level": "Log level (`DEBUG`, `INFO`, `WARNING`, `ERROR`).",
    },
    "ProviderSettings": {
        "base_url": "The provider API's base URL.",
        "push_rate_per_second": "Pushes (`POST /ingress/...`) believed per second from this account; more are "
                                "answered 429 (each believed push costs a poll).",
        "push_burst": "Pushes believed at once before `push_rate_per_second` applies.",
        "accounts": "More accounts of this provider, by name: each overrides any setting above and inherits the rest; "
                    "items name theirs with `--account NAME`.",
    },
    "BillitSettings": {
        "base_url": "Billit's API; sandbox `https://api.sandbox.billit.be` (credentials and PartyIDs differ between "
                    "the two).",
        "party_id": "The company (`PartyID` header).",
        "client_id": "OAuth2 (Authorization Code flow only): the app's client id.",
        "client_secret": "OAuth2: the app's client secret.",
        "refresh_token": "OAuth2: the refresh token from the one-time authorization. It rotates on every refresh; the "
                         "current one is kept (encrypted) in the database, and this setting only seeds it: set a new "
                         "one to replace it.",
    },
    "AmiliCollectionSettings": {
        "client_id": "OAuth2 client credentials: the client id.",
        "client_secret": "OAuth2 client credentials: the client secret.",
        "org_id": "The organisation whose invoices, cases and batches are read (`/orgs/{ORG_ID}`).",
    },
    "AmiliAdaSettings": {
        "api_code": "The API code, sent as the login JWT's `api_code` claim.",
        "private_key": "The registered private key that signs the login JWT, as PEM text.",
        "private_key_file": "... or a file holding it.",
        "algorithm": "The login JWT's signing algorithm (the key's kind).",
    },
    "AmiliArmSettings": {
        "client_no": "The client number (`/clients/{CLIENT_NO}/batches/...`).",
        "token": "A long-lived JWT issued to you; or client credentials at `AUTH_URL`.",
        "auth_url": "A client-credentials token service (`POST {AUTH_URL}/token`), with `CLIENT_ID` and "
                    "`CLIENT_SECRET`.",
        "client_id": "Client credentials: the client id.",
        "client_secret": "Client credentials: the client secret.",
        "scope": "Optional OAuth2 scope of the client-credentials token.",
    },
    "SweepingSettings": {
        "discover": "Track what a sweep lists that nobody tracks (label `source=discovered`); needs `SWEEP_SECONDS`.",
        "discover_filter": "Only discover listed entries that pass this filter (`OrderType eq 'Invoice' and ...`; "
                           "empty: all).",
    },
}


@dataclass(frozen=True)
class Row:
    """One setting: where it is set and what it does."""

    env: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Section:
    """The settings of one (nested) model."""

    title: str
    prefix: str
    doc: str
    rows: tuple[Row, ...]


def _comments(cls: type) -> dict[str, str]:
    """``field -> text`` from the ``#:`` comment lines right above each field in ``cls``'s own source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # a model built at run time has no source: descriptions come from elsewhere
        return {}
    lines = source.splitlines()
    out = {}
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#:"):
                comment.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            if comment:
                out[node.target.id] = " ".join(comment)
    return out


def _owner(model: type[BaseModel], name: str) -> type:
    """The class in ``model``'s MRO that declares field ``name``."""
    for cls in model.__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            return cls
    return model


def description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """What a field does: its Field description, a DESCRIPTIONS entry, or its ``#:`` comment."""
    owner = _owner(model, name)
    # Keyed by any class of the model's MRO: a model built at run time (create_model) keeps its
    # class name, and its fields may be declared on a base.
    listed = next((DESCRIPTIONS[cls.__name__][name] for cls in model.__mro__
                   if name in DESCRIPTIONS.get(cls.__name__, {})), None)
    text = field.description or listed or _comments(owner).get(name, "")
    # Code references in comments (``x``) read as `x` in Markdown.
    return " ".join(text.replace("``", "`").split())


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(the type without None, whether None was allowed)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _model(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _optional(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def type_name(annotation: Any) -> str:
    """A short, readable name of a setting's type."""
    inner, optional = _optional(annotation)
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        name = " \\| ".join(f"`{a}`" for a in typing.get_args(inner))
    elif isinstance(inner, type) and issubclass(inner, SecretStr):
        name = "secret"
    elif isinstance(inner, type) and issubclass(inner, Enum):
        name = " \\| ".join(f"`{m.value}`" for m in inner)
    elif isinstance(inner, type) and issubclass(inner, Path):
        name = "path"
    elif isinstance(inner, type) and inner in (str, int, float, bool):
        name = {str: "text", int: "integer", float: "number", bool: "boolean"}[inner]
    elif origin is dict:
        name = "per name"
    else:
        name = getattr(inner, "__name__", str(inner))
    return name


def constraints(field: FieldInfo) -> str:
    """``> 0``, ``≥ 1, ≤ 512``: the bounds pydantic checks."""
    out = []
    for meta in field.metadata:
        for kind, symbol, attr in ((Gt, ">", "gt"), (Ge, "≥", "ge"), (Lt, "<", "lt"), (Le, "≤", "le")):
            if isinstance(meta, kind):
                out.append(f"{symbol} {getattr(meta, attr):g}")
        if isinstance(meta, MinLen):
            out.append(f"at least {meta.min_length} characters")
        if isinstance(meta, MaxLen):
            out.append(f"at most {meta.max_length} characters")
    return ", ".join(out)


def default_text(field: FieldInfo) -> str:
    """The default as the environment would spell it; `required` when there is none."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default if field.default_factory is None else field.default_factory()  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, dict | list | tuple) and not value:
        return "none"
    text = str(value)
    return f"`{text}`" if text else "empty"


def env_name(prefix: str, name: str, field: FieldInfo) -> str:
    """The variable pydantic-settings reads for a field (its alias when it has one)."""
    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
    return prefix + (alias or name).upper()


def sections(model: type[BaseModel], prefix: str, title: str) -> Iterator[Section]:
    """``model``'s own settings as one section, then each nested model's, recursively."""
    rows, tail, nested = [], [], []
    for name, field in model.model_fields.items():
        sub = _model(field.annotation)
        if sub is not None:
            nested.append((name, sub))
            continue
        kind = type_name(field.annotation)
        bound = constraints(field)
        env = env_name(prefix, name, field)
        if typing.get_origin(_optional(field.annotation)[0]) is dict:
            value = typing.get_args(_optional(field.annotation)[0])[-1]
            if _model(value) is not None:
                nested.append((f"{name}.<name>", _model(value)))
                continue
            env += "__<NAME>__<SETTING>"
            tail.append(Row(env, "any setting above", default_text(field), description(model, name, field)))
            continue
        rows.append(Row(env, kind + (f", {bound}" if bound else ""), default_text(field),
                        description(model, name, field)))
    yield Section(title, prefix, _needs(model, prefix), tuple(rows + tail))
    for name, sub in nested:
        sub_prefix = prefix + name.replace(".<name>", "__<NAME>").upper() + "__"
        yield from sections(sub, sub_prefix, name)


def _needs(model: type[BaseModel], prefix: str) -> str:
    """What an account needs before it is polled, from the model's ``REQUIRED`` (when it has one)."""
    needs = getattr(model, "REQUIRED", ())
    if not needs:
        return ""
    spelt = [" or ".join(" and ".join(f"`{prefix}{f.strip().upper()}`" for f in option.split("+"))
                         for option in need.split("|")) for need in needs]
    return "An account is polled once these are set: " + "; ".join(spelt) + "."


def settings_model() -> type[BaseModel]:
    """The top-level settings model, and its environment prefix."""
    from config.settings import Settings

    return Settings


def render() -> str:
    """The whole page."""
    model = settings_model()
    prefix = str(model.model_config.get("env_prefix", ""))
    delimiter = model.model_config.get("env_nested_delimiter")
    all_sections = list(sections(model, prefix, "General"))
    out = [
        "# Configuration",
        "",
        "<!-- Generated by scripts/config_doc.py from config/settings.py and the provider settings "
        "models. Do not edit: run `.venv/bin/python scripts/config_doc.py`. -->",
        "",
        f"Every setting is an environment variable starting with `{prefix}`, read by `config/settings.py` "
        "(the only code that reads the environment) from the environment or from a `.env` file in the "
        "working directory. Names are case-insensitive. A nested setting joins its names with "
        f"`{delimiter}`: a provider's `api_key` is `{prefix}<PROVIDER>{delimiter}API_KEY`.",
        "",
        "- A value that does not fit its type or bounds, or an unknown `POLLER_*` variable (a typo), "
        "stops every command with one line naming the variable (exit 2).",
        "- Secrets (type *secret*) have no defaults, never appear in logs or error messages, and are "
        "never stored on item rows.",
        "- Durations written as text (`5d`, `24h`, `30m`) also take plain seconds.",
        "- A provider account named `acme` overrides any provider setting with "
        f"`{prefix}<PROVIDER>{delimiter}ACCOUNTS{delimiter}ACME{delimiter}<SETTING>` and inherits the "
        "rest ([providers](providers.md#accounts)).",
        "",
        "What each provider's settings mean for its API: [providers](providers.md). Sizing the workers: "
        "[sizing](sizing.md).",
        "",
        "Sections: " + ", ".join(f"[{s.title}](#{_slug(s.title)})" for s in all_sections) + ".",
    ]
    for section in all_sections:
        out += ["", f"## {section.title}", ""]
        if section.prefix != prefix:
            out += [f"Variables `{section.prefix}*`. {section.doc}".rstrip(),
                    "", f"What they mean for the provider's API: [providers](providers.md#{_slug(section.title)}).", ""]
        out += ["| variable | type | default | what it does |", "|---|---|---|---|"]
        out += [f"| `{r.env}` | {r.type} | {r.default} | {_cell(r.description)} |" for r in section.rows]
    return "\n".join(out) + "\n"


def rows() -> list[Row]:
    """Every setting's row, in page order."""
    model = settings_model()
    return [r for s in sections(model, str(model.model_config.get("env_prefix", "")), "General") for r in s.rows]


def _cell(text: str) -> str:
    # Outside code spans, a bare <name> would be read as an HTML tag and vanish.
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def _slug(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with ``--check`` report whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run .venv/bin/python scripts/config_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(rows())} settings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
