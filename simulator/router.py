"""Transport-neutral request/response types and the path router.

Provider modules register handlers here instead of subclassing the HTTP server,
so adding a provider means adding one module, not touching the server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"


class HttpError(Exception):
    """Raised by admin handlers to answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    """One parsed HTTP request as handlers see it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        """Return a header value (case-insensitive), or None when absent."""
        value = self.headers.get(name)
        return None if value is None else str(value)

    def query_one(self, name: str) -> str | None:
        """Return the first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """Decode the body as JSON; an empty body counts as ``{}``."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, f"body is not valid JSON: {exc}") from exc
        except RecursionError:
            raise HttpError(400, "body is not valid JSON: nested too deeply") from None

    def json_object(self) -> dict[str, Any]:
        """Decode the body as a JSON object, answering 400 for anything else."""
        data = self.json()
        if not isinstance(data, dict):
            raise HttpError(400, "body must be a JSON object")
        return data


@dataclass
class Response:
    """What a handler answers; the server adds Content-Length."""

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """Build a JSON response. Key order is kept, so equal payloads give equal bytes."""
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return Response(status=status, body=body, content_type=JSON_TYPE, headers=dict(headers or {}))


Handler = Callable[..., Response]


@dataclass(frozen=True)
class Route:
    """A registered ``METHOD pattern`` and who serves it."""

    method: str
    pattern: str
    regex: re.Pattern[str]
    label: str
    handler: Handler


class Router:
    """Maps ``METHOD /path/{param}`` patterns to handlers."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: Handler, *, label: str) -> None:
        """Register ``handler`` for ``method`` on ``pattern``.

        ``{name}`` in the pattern matches one path segment and is passed to the
        handler as a keyword argument. ``label`` groups the route in stats
        (a provider name, or ``"_sim"`` for admin routes).
        """
        regex = re.compile(
            "^"
            + re.sub(
                r"\\\{(\w+)\\\}",
                lambda m: f"(?P<{m.group(1)}>[^/]+)",
                re.escape(pattern),
            )
            + "$"
        )
        self._routes.append(Route(method.upper(), pattern, regex, label, handler))

    def dispatch(self, request: Request) -> tuple[str, Response]:
        """Run the matching handler; return ``(label, response)`` for stats."""
        allowed: list[str] = []
        label = "unrouted"
        for route in self._routes:
            match = route.regex.match(request.path)
            if match is None:
                continue
            label = route.label
            if route.method != request.method:
                allowed.append(route.method)
                continue
            try:
                return route.label, route.handler(request, **match.groupdict())
            except HttpError as exc:
                return route.label, json_response(exc.status, {"error": exc.message})
        if allowed:
            return label, json_response(
                405,
                {"error": f"method {request.method} not allowed on {request.path}"},
                {"Allow": ", ".join(sorted(set(allowed)))},
            )
        return label, json_response(404, {"error": f"no route for {request.method} {request.path}"})
