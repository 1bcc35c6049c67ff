"""`poller track --file`: items from a CSV or JSON-lines file.

Parsing is pure (file text in, ``(line number, ItemSpec or InputError)`` out); ``import_entries``
stores what parsed through the catalog in chunks and counts what happened. A line that is refused,
here or by the catalog, stores nothing; the others are stored.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.catalog import Catalog, ItemSpec, Refused, check_interval, check_labels
from worker.errors import InputError

#: The columns of a CSV file and the keys of a JSON-lines object.
FIELDS = ("provider", "ref", "kind", "account", "interval", "labels", "external_id")
#: Also accepted for ``interval``: the API's name for it.
ALIASES = {"interval_seconds": "interval"}
#: Entries stored per transaction.
CHUNK = 1000

Entry = tuple[int, ItemSpec | InputError]


def parse_label(text: str, field: str = "--label") -> tuple[str, str]:
    """``key=value`` as a pair, or an InputError naming ``field``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{field} {text!r} must be key=value (e.g. customer=acme)", field=field)
    return key.strip(), value.strip()


def parse_labels(text: str, field: str = "labels") -> dict[str, str]:
    """``k=v;k2=v2`` (a CSV cell) as a dict; an empty part (a trailing ``;``) is allowed."""
    pairs = [parse_label(part, field) for part in text.split(";") if part.strip()]
    labels = dict(pairs)
    if len(labels) < len(pairs):
        raise InputError(f"{field} names a key twice in {text!r}", field=field)
    return labels


def detect_format(name: str, text: str) -> str:
    """``"csv"`` or ``"jsonl"``: by the file's extension, else by its first character."""
    suffix = Path(name).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if text.lstrip("\ufeff \t\r\n")[:1] in ("{", "[") else "csv"


def parse(name: str, text: str) -> list[Entry]:
    """Every entry of a file, in order, each an ItemSpec or the InputError that refuses it.

    Raises:
        InputError: the file as a whole cannot be read (no header, unknown column, not JSON lines).
    """
    text = text.removeprefix("\ufeff")
    return parse_jsonl(name, text) if detect_format(name, text) == "jsonl" else parse_csv(name, text)


def parse_csv(name: str, text: str) -> list[Entry]:
    """A CSV file with a header row; ``labels`` cells are ``k=v;k2=v2``, empty cells mean "not given"."""
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    # Spreadsheets in many locales write ``;`` or tabs between cells.
    delimiter = next((d for d in (",", ";", "\t") if d in header_line), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    entries: list[Entry] = []
    header: list[str] | None = None
    last = 0
    try:
        for row in reader:
            line, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = _header(name, row)
                continue
            if len(row) > len(header):
                entries.append((line, InputError(f"{len(row)} values, but the header has {len(header)} columns")))
                continue
            values = {col: cell.strip() for col, cell in zip(header, row, strict=False) if cell.strip()}
            entries.append((line, _entry(values, csv_cells=True)))
    except csv.Error as err:
        raise InputError(f"{name} line {reader.line_num} is not CSV: {err}", field="--file") from None
    if header is None:
        raise InputError(f"{name} has no header row (columns: {', '.join(FIELDS)})", field="--file")
    return entries


def _header(name: str, row: list[str]) -> list[str]:
    cols = [ALIASES.get(c.strip().lower(), c.strip().lower()) for c in row]
    unknown = [c for c in cols if c not in FIELDS]
    if unknown:
        raise InputError(f"{name}: unknown column {unknown[0]!r} in the header row; known: {', '.join(FIELDS)}",
                         field="--file")
    missing = [c for c in ("provider", "ref") if c not in cols]
    if missing:
        raise InputError(f"{name}: the header row has no {' or '.join(missing)} column "
                         f"(columns: {', '.join(FIELDS)})", field="--file")
    if len(set(cols)) < len(cols):
        raise InputError(f"{name}: a column appears twice in the header row", field="--file")
    return cols


def parse_jsonl(name: str, text: str) -> list[Entry]:
    """JSON lines: one object per line with the CSV's keys; ``labels`` is an object."""
    if text.lstrip()[:1] == "[":
        raise InputError(f"{name} holds a JSON array; write one object per line (JSON lines)", field="--file")
    entries: list[Entry] = []
    decoded = 0
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            entries.append((line, InputError(f"not JSON: {err.msg} at column {err.colno}")))
            continue
        decoded += 1
        if not isinstance(obj, dict):
            entries.append((line, InputError(f"a JSON {type(obj).__name__}, not an object")))
            continue
        entries.append((line, _entry(obj, csv_cells=False)))
    if entries and not decoded:
        raise InputError(f"{name} is not JSON lines ({entries[0][1]} on line {entries[0][0]})", field="--file")
    return entries


def _entry(values: Mapping[str, Any], *, csv_cells: bool) -> ItemSpec | InputError:
    try:
        return spec_from(values, csv_cells=csv_cells)
    except InputError as err:
        return err


def spec_from(values: Mapping[str, Any], *, csv_cells: bool) -> ItemSpec:
    """One entry as an ItemSpec; an InputError names the field at fault."""
    got: dict[str, Any] = {}
    for key, value in values.items():
        name = ALIASES.get(key, key)
        if name not in FIELDS:
            raise InputError(f"unknown field {key!r}; known: {', '.join(FIELDS)}", field=key)
        if name in got:
            raise InputError(f"{key} given twice (interval and interval_seconds)", field=name)
        got[name] = value
    for name in ("provider", "ref", "kind", "account", "external_id"):
        value = got.get(name)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{name} must be a string, got {json.dumps(value)}", field=name)
    for name in ("provider", "ref"):
        if not (got.get(name) or "").strip():
            raise InputError(f"{name} is missing", field=name)
    return ItemSpec(provider=got["provider"].strip(), ref=got["ref"].strip(), kind=got.get("kind") or None,
                    account=got.get("account") or None, interval_s=_interval(got.get("interval")),
                    labels=_labels(got.get("labels"), csv_cells), external_id=got.get("external_id") or None)


def _interval(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"interval must be a number of seconds, got {value!r}", field="interval") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"interval must be a number of seconds, got {json.dumps(value)}", field="interval")
    return check_interval(value, field="interval")


def _labels(value: Any, csv_cells: bool) -> dict[str, str] | None:
    if value is None:
        return None
    if csv_cells and isinstance(value, str):
        value = parse_labels(value)
    if not isinstance(value, dict):
        raise InputError(f"labels must be an object of strings, got {json.dumps(value)}", field="labels")
    return check_labels(value)


def reason(err: InputError) -> str:
    """An error as one line that names the field at fault."""
    message = str(err)
    return message if not err.field or message.startswith(err.field) else f"{err.field}: {message}"


@dataclass
class Report:
    """What an import did: counts, and each refused line with its reason."""

    created: int = 0
    existing: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as printed: the counts, then one line per refused entry."""
        head = f"created {self.created}, already tracked {self.existing}, refused {len(self.refused)}"
        return [head, *(f"line {line}: {why}" for line, why in sorted(self.refused))]


def import_entries(catalog: Catalog, entries: Sequence[Entry], *, chunk: int = CHUNK,
                   progress: Callable[[int], None] = lambda n: None) -> Report:
    """Store the parsed entries, ``chunk`` at a time (one transaction each); ``progress(n)`` after each."""
    report = Report()
    for start in range(0, len(entries), chunk):
        part = entries[start:start + chunk]
        good = [(line, spec) for line, spec in part if isinstance(spec, ItemSpec)]
        report.refused += [(line, reason(err)) for line, err in part if isinstance(err, InputError)]
        results = catalog.upsert_many([spec for _, spec in good]) if good else []
        for (line, _), result in zip(good, results, strict=True):
            if isinstance(result, Refused):
                report.refused.append((line, reason(result.error)))
            elif result[1]:
                report.created += 1
            else:
                report.existing += 1
        progress(len(part))
    return report


def read_file(path: str, stdin: Callable[[], str]) -> tuple[str, str]:
    """The name and text of ``path`` (``-``: standard input), or an InputError naming --file."""
    if path == "-":
        return "stdin", stdin()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"--file {path}: no such file", field="--file") from None
    except OSError as err:
        raise InputError(f"--file {path}: {err.strerror or err}", field="--file") from None
    try:
        return path, data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"--file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 CSV or JSON lines",
                         field="--file") from None
