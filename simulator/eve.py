"""Eve's REST conventions as the Amili Sweden (ADA) fake serves them: RFC 1123 dates, the error
envelope, and the query engine behind ``GET /cases`` (``where``, ``sort``, ``projection``, paging
parameters) and conditional GETs.

``where`` matches by equality on top-level or dotted fields, plus the Mongo operators Eve passes
through (``$eq $ne $gt $gte $lt $lte $in $nin $exists``, ``$and``/``$or``); RFC 1123 strings compare
as dates. ``projection`` is inclusion or exclusion, dotted paths allowed; the meta fields always stay
in inclusion mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from simulator.router import Request, Response, json_response

# Eve adds these to every projection, so an inclusion projection still identifies the document.
META_FIELDS = ("_id", "_created", "_updated", "_etag")


def rfc1123(moment: datetime) -> str:
    """Format a naive-UTC or aware datetime like Amili: ``Tue, 07 Oct 2025 07:41:01 GMT``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_rfc1123(text: str) -> datetime | None:
    """Parse an RFC 1123 date (as an aware datetime), or None when ``text`` is not one."""
    if not isinstance(text, str) or not text.endswith("GMT"):
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def eve_error(status: int, message: str) -> Response:
    """Eve's error envelope: ``{"_status": "ERR", "_error": {"code", "message"}}``."""
    return json_response(status, {"_status": "ERR", "_error": {"code": status, "message": message}})


class BadQuery(Exception):
    """A query parameter Eve would answer 400 for."""


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def json_param(request: Request, name: str) -> Any:
    raw = request.query_one(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadQuery(f"Unable to parse `{name}` clause: {exc}") from exc
    if not isinstance(value, dict):
        raise BadQuery(f"`{name}` must be a JSON object")
    return value


def int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_one(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"`{name}` must be an integer, got {raw!r}") from None
    if value < 1:
        raise BadQuery(f"`{name}` must be >= 1, got {value}")
    return value


def parse_sort(raw: str | None) -> list[tuple[str, bool]]:
    """``"-_created,_id"`` -> ``[("_created", True), ("_id", False)]`` (True = descending)."""
    if raw is None or not raw.strip():
        return []
    result = []
    for part in raw.split(","):
        part = part.strip()
        descending = part.startswith("-")
        field = part[1:] if descending else part
        if not field or any(ch in field for ch in "[](){}'\" "):
            raise BadQuery(f"Unable to parse `sort` clause {raw!r}: use field names, '-' for descending")
        result.append((field, descending))
    return result


def _values(doc: Any, path: str) -> list[Any]:
    """Every value at dotted ``path``; like Mongo, lists on the way are searched element by element."""
    values = [doc]
    for part in path.split("."):
        found = []
        for value in values:
            if isinstance(value, dict):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                found.extend(item[part] for item in value if isinstance(item, dict) and part in item)
        values = found
    return values


def _comparable(value: Any) -> Any:
    date = parse_rfc1123(value) if isinstance(value, str) else None
    return date if date is not None else value


def _compare(op: str, value: Any, operand: Any) -> bool:
    left, right = _comparable(value), _comparable(operand)
    try:
        return bool(_COMPARISONS[op](left, right))
    except TypeError:
        return False


def _field_matches(values: list[Any], condition: Any) -> bool:
    candidates = list(values)
    for value in values:
        if isinstance(value, list):
            candidates.extend(value)
    if isinstance(condition, dict) and condition and all(str(k).startswith("$") for k in condition):
        for op, operand in condition.items():
            if op == "$eq":
                ok = _field_matches(values, operand)
            elif op == "$ne":
                ok = not _field_matches(values, operand)
            elif op in _COMPARISONS:
                ok = any(_compare(op, value, operand) for value in candidates)
            elif op in ("$in", "$nin"):
                if not isinstance(operand, list):
                    raise BadQuery(f"{op} needs a list")
                found = any(_field_matches(values, item) for item in operand)
                ok = found if op == "$in" else not found
            elif op == "$exists":
                ok = bool(values) == bool(operand)
            else:
                raise BadQuery(f"operator {op} is not supported")
            if not ok:
                return False
        return True
    if condition is None:
        return not values or any(value is None for value in candidates)
    return any(_equal(value, condition) for value in candidates)


def _equal(value: Any, condition: Any) -> bool:
    # JSON true must not equal 1 (Python's True == 1 would say it does).
    if isinstance(value, bool) or isinstance(condition, bool):
        return value is condition
    return bool(value == condition)


def matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, condition in where.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not all(isinstance(c, dict) for c in condition):
                raise BadQuery(f"{key} needs a list of objects")
            results = [matches(doc, c) for c in condition]
            if not (all(results) if key == "$and" else any(results)):
                return False
        elif key.startswith("$"):
            raise BadQuery(f"operator {key} is not supported")
        elif not _field_matches(_values(doc, key), condition):
            return False
    return True


def safe_matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    try:
        return matches(doc, where)
    except BadQuery:
        return False


def sort_by(field: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    """A sort key function for the (dotted) ``field``."""
    return lambda doc: _sort_key(_values(doc, field))


def _sort_key(values: list[Any]) -> tuple[int, Any]:
    # Ranks keep mixed types comparable; missing/null first ascending, as Mongo sorts.
    value = values[0] if values else None
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        date = parse_rfc1123(value)
        return (2, date.timestamp()) if date is not None else (3, value)
    return (5, json.dumps(value, sort_keys=True))


def project(doc: dict[str, Any], projection: dict[str, Any] | None) -> dict[str, Any]:
    """Apply an Eve/Mongo projection ``{"field": 1}`` (inclusion) or ``{"field": 0}`` (exclusion)."""
    if not projection:
        return doc
    flags = {}
    for field, flag in projection.items():
        if flag not in (0, 1) or not isinstance(flag, (int, bool)):
            raise BadQuery(f"projection values must be 0 or 1, got {flag!r} for {field!r}")
        flags[field] = bool(flag)
    data_flags = {f: v for f, v in flags.items() if f not in META_FIELDS}
    if data_flags and len(set(data_flags.values())) > 1:
        raise BadQuery("projection cannot mix inclusion and exclusion")
    including = any(data_flags.values()) if data_flags else all(flags.values())
    tree: dict[str, Any] = {}
    for field, flag in flags.items():
        if field in META_FIELDS and including:
            continue
        if flag != including:
            continue
        node = tree
        parts = field.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is True:
                break
            node = child
        else:
            node[parts[-1]] = True
    if including:
        for meta in META_FIELDS:
            tree[meta] = True
    picked: dict[str, Any] = _pick(doc, tree, including)
    return picked


def _pick(doc: Any, tree: dict[str, Any], including: bool) -> Any:
    """``doc`` with the paths marked in ``tree`` kept (``including``) or dropped."""
    if isinstance(doc, list):
        # Inclusion keeps only sub-documents, as Mongo does; exclusion keeps every element.
        return [_pick(item, tree, including) for item in doc if not including or isinstance(item, dict)]
    if not isinstance(doc, dict):
        return doc
    kept = {}
    for key, value in doc.items():
        node = tree.get(key)
        if node is True:
            if including:
                kept[key] = value
        elif isinstance(node, dict) and (not including or isinstance(value, (dict, list))):
            kept[key] = _pick(value, node, including)
        elif not including:
            kept[key] = value
    return kept


def not_modified(request: Request, body: dict[str, Any]) -> bool:
    """Eve's conditional GET: If-None-Match wins; else If-Modified-Since against ``_updated``."""
    if_none_match = request.header("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        if "*" in tags:
            return True
        bare = {tag.removeprefix("W/").strip('"') for tag in tags}
        return body["_etag"] in bare
    if_modified_since = request.header("If-Modified-Since")
    if if_modified_since is not None:
        since = parse_rfc1123(if_modified_since.strip())
        updated = parse_rfc1123(body["_updated"])
        return since is not None and updated is not None and updated <= since
    return False


#: ``max_results`` when a request gives none; above MAX_PAGE_SIZE it is clamped, as Eve's PAGINATION_LIMIT does.
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100


def answer_list(request: Request, documents: list[dict[str, Any]]) -> Response:
    """One page of ``documents`` as Eve lists a resource: ``{"_items", "_meta"}``, or a 400."""
    try:
        where = json_param(request, "where")
        projection = json_param(request, "projection")
        sort = parse_sort(request.query_one("sort"))
        page = int_param(request, "page", 1)
        max_results = min(int_param(request, "max_results", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
        matched = [doc for doc in documents if where is None or matches(doc, where)]
        # Stable sorts applied last key first give a multi-key sort.
        for field, descending in reversed(sort):
            matched.sort(key=sort_by(field), reverse=descending)
        start = (page - 1) * max_results
        items = [project(doc, projection) for doc in matched[start : start + max_results]]
    except BadQuery as exc:
        return eve_error(400, str(exc))
    return json_response(
        200, {"_items": items, "_meta": {"page": page, "max_results": max_results, "total": len(matched)}}
    )


def answer_document(request: Request, body: dict[str, Any]) -> Response:
    """One document as Eve answers it: ETag and Last-Modified, 304 when unchanged, ``projection`` applied."""
    headers = {"ETag": f'"{body["_etag"]}"', "Last-Modified": body["_updated"]}
    if not_modified(request, body):
        return Response(304, b"", headers=headers)
    try:
        shown = project(body, json_param(request, "projection"))
    except BadQuery as exc:
        return eve_error(400, str(exc))
    return json_response(200, shown, headers)
