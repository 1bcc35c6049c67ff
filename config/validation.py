"""Checks the settings need beyond pydantic's field constraints.

A value that only fails when first used (a retry schedule at the first delivery, a lease at the
first dispatch) starts a daemon that does nothing, so every value is parsed here, at load, and a
bad one is one line naming the variable. Messages never quote values: they may be secrets.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from worker.errors import ConfigurationError

#: Upper bound of every duration in seconds: keeps ``now + timedelta(...)`` from overflowing.
MAX_SECONDS = 366 * 86400.0
#: The levels the standard library knows by name.
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
#: Brokers the poller works with: Redis (also for rate limits and the beat lease), or in-memory for tests.
BROKER_SCHEMES = ("redis", "rediss", "unix", "memory")
#: Databases the migrations are written and tested for.
DATABASE_BACKENDS = ("sqlite", "postgresql")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
DURATION_RULE = "a positive number of seconds, or a number with s/m/h/d (e.g. 90, 30m, 12h, 5d), at most 366 days"


def duration_seconds(text: str) -> float:
    """``90``, ``30m``, ``12h`` or ``5d`` as seconds.

    Raises:
        ValueError: not such a duration, not positive, not finite or over 366 days.
    """
    return _seconds(text.strip().lower(), MAX_SECONDS, DURATION_RULE)


def _seconds(value: str, limit: float, rule: str) -> float:
    unit = value[-1:] if value[-1:] in _UNITS else "s"
    number = value[:-1] if value[-1:] in _UNITS else value
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"must be {rule}") from None
    if not math.isfinite(seconds) or not 0 < seconds <= limit:
        raise ValueError(f"must be {rule}")
    return seconds


def parse_duration(text: str, name: str) -> timedelta:
    """A duration setting as a timedelta; a ConfigurationError naming ``name`` otherwise."""
    try:
        return timedelta(seconds=duration_seconds(text))
    except ValueError as err:
        raise ConfigurationError(f"{name} {err}") from None


#: What keeps history for ever in a retention setting.
FOREVER = ("0", "forever")
#: Retention may reach past the other durations' bound (a few years of history).
MAX_RETENTION_SECONDS = 10 * 366 * 86400.0
RETENTION_RULE = "0 or forever (keep everything), or a duration such as 30d, 12h or 3600, at most 10 years"


def retention_seconds(text: str) -> float | None:
    """A retention setting (``30d``, ``12h``, ``0``, ``forever``) as seconds; None keeps everything.

    Raises:
        ValueError: neither a duration nor 0 / forever.
    """
    value = text.strip().lower()
    return None if value in FOREVER else _seconds(value, MAX_RETENTION_SECONDS, RETENTION_RULE)


def retention_count(text: str) -> int | None:
    """A count to keep (``100``, ``0``, ``forever``); None keeps everything.

    Raises:
        ValueError: not a whole number from 0 up, nor forever.
    """
    value = text.strip().lower()
    if value in FOREVER:
        return None
    if not value.isdigit():
        raise ValueError("must be a whole number (how many to keep), or 0 / forever to keep everything")
    return int(value)


def time_of_day(text: str) -> tuple[int, int]:
    """``HH:MM`` (24-hour, UTC) as (hour, minute).

    Raises:
        ValueError: not such a time.
    """
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if match is None:
        raise ValueError("must be a time of day as HH:MM (24-hour, UTC), e.g. 03:30")
    return int(match.group(1)), int(match.group(2))


def parse_schedule(text: str) -> tuple[float, ...]:
    """A retry schedule, ``5,300,1800``: the seconds to wait after each failed attempt.

    Raises:
        ValueError: empty, or a step that is not a finite number of seconds from 0 to 366 days.
    """
    rule = "must be comma-separated seconds from 0 to 31622400 (366 days), e.g. 5,300,1800"
    try:
        steps = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(rule) from None
    if not steps or not all(math.isfinite(x) and 0 <= x <= MAX_SECONDS for x in steps):
        raise ValueError(rule)
    return steps


def check_broker_url(value: str) -> str:
    """A Celery broker URL the poller can use (see BROKER_SCHEMES).

    Raises:
        ValueError: another scheme, or an unparseable URL.
    """
    rule = f"must be a {', '.join(s + '://' for s in BROKER_SCHEMES)} URL, e.g. redis://127.0.0.1:6379/0"
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - parsing the port raises ValueError when it is not a number in range
    except ValueError:
        raise ValueError(rule) from None
    if parts.scheme.lower() not in BROKER_SCHEMES or "://" not in value:
        raise ValueError(rule)
    if parts.scheme.lower() in ("redis", "rediss") and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"{rule} (the path is the database number)")
    return value


def check_database_url(value: str, backends: Iterable[str] | None = None) -> str:
    """An SQLAlchemy URL whose dialect and driver are installed (and, if given, of ``backends``).

    Raises:
        ValueError: unparseable, another database, or a driver that is not installed.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    allowed = tuple(backends or ())
    example = "e.g. sqlite+pysqlite:////var/lib/poller/poller.db or postgresql+psycopg://user:pw@host/db"
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(f"must be an SQLAlchemy database URL, {example}") from None
    if allowed and url.get_backend_name() not in allowed:
        raise ValueError(f"must be a {' or '.join(allowed)} URL, {example}")
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ValueError(f"names an unknown database driver, {example}") from None
    except ImportError as err:
        raise ValueError(f"needs the {err.name or 'database driver'} package, which is not installed") from None
    return value


def check_log_level(value: str) -> str:
    """A standard level name, upper-cased.

    Raises:
        ValueError: any other name.
    """
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return level


def check_host(value: str) -> str:
    """An IP address or a host name to listen on.

    Raises:
        ValueError: neither.
    """
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError("must be an IP address or a host name, e.g. 127.0.0.1 or 0.0.0.0") from None
    return value


def describe_validation_error(err: ValidationError, prefix: str = "POLLER_") -> str:
    """One line naming the environment variable behind each invalid setting, without its value."""
    problems = []
    for e in err.errors():
        var = prefix + "__".join(str(p).upper() for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        problems.append(f"{var}: {msg}")
    return "invalid settings: " + "; ".join(problems)


def unknown_variables(model: type[BaseModel], names: Iterable[str], prefix: str = "POLLER_") -> list[str]:
    """The ``prefix``-ed names in ``names`` that set nothing, each with the closest known name.

    Nested models (provider settings) are reached with ``__``; their ``accounts`` take any account
    name followed by one of the provider's own settings.
    """
    known, nested = _known_names(model, prefix)
    problems = []
    for raw in names:
        name = raw.upper()
        if not name.startswith(prefix) or name in known or _is_account_setting(name, nested):
            continue
        candidates = known
        for base, inner in nested.items():
            head = base + "ACCOUNTS__"
            if name.startswith(head) and "__" in name[len(head):]:
                # A misspelt account setting is compared with that account's own names.
                account = name[len(head):].split("__", 1)[0]
                candidates = {f"{head}{account}__{n[len(base):]}" for n in inner}
        close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; see docs/configuration.md"
        problems.append(f"{raw} is not a setting{hint}")
    return problems


def _known_names(model: type[BaseModel], prefix: str) -> tuple[set[str], dict[str, set[str]]]:
    """Every variable name of ``model``, and, per nested model prefix, its own variable names."""
    known: set[str] = set()
    nested: dict[str, set[str]] = {}
    for field, info in model.model_fields.items():
        name = prefix + field.upper()
        known.add(name)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            inner = {f"{name}__{f.upper()}" for f in sub.model_fields}
            known |= inner
            nested[name + "__"] = {n for n in inner if not n.endswith("__ACCOUNTS")}
    return known, nested


def _is_account_setting(name: str, nested: Mapping[str, set[str]]) -> bool:
    """``POLLER_BILLIT__ACCOUNTS__ACME__API_KEY``: a known provider setting for any account."""
    for base, names in nested.items():
        head = base + "ACCOUNTS__"
        if name.startswith(head):
            rest = name[len(head):]
            account, sep, field = rest.partition("__")
            if not account or not sep:
                # POLLER_BILLIT__ACCOUNTS__ACME as JSON: pydantic validates it.
                return bool(account) and not sep
            return base + field in names
    return False


def read_dotenv(path: str | None) -> dict[str, Any]:
    """The variables of a ``.env`` file (empty when there is none)."""
    from pathlib import Path

    from dotenv import dotenv_values

    if not path or not Path(path).is_file():
        return {}
    return dict(dotenv_values(path))
