"""The poller's front door: one FastAPI application for the services that use it.

Routes are thin: each checks its input and calls the same service layer as the CLI (worker.catalog,
worker.feed, worker.subscriptions, worker.apikeys, worker.status). Served by `poller api`, and by
`poller run` beside the worker and beat.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from api.problems import ApiProblem, Problem
from worker.apikeys import ApiKeys, Caller
from worker.catalog import Catalog
from worker.feed import EventFeed
from worker.ingress import Ingress
from worker.status import Check
from worker.subscriptions import Subscriptions

#: The largest request body accepted (a 10,000-item batch is about 2 MB).
MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass
class ApiServices:
    """What the routes call. Built from settings by ``config.wiring.build_api``.

    Attributes:
        readiness: the checks behind /readyz (database, broker, dispatch heartbeat).
        page_data: what the status page shows.
        refresh_s: how often the status page reloads itself.
        dashboard_public: serve the status page without a key.
    """

    catalog: Catalog
    feed: EventFeed
    keys: ApiKeys
    subscriptions: Subscriptions
    readiness: Callable[[], list[Check]]
    page_data: Callable[[], dict[str, Any]]
    refresh_s: int = 5
    dashboard_public: bool = False
    secret_grace_s: float = 24 * 3600.0
    #: Provider pushes (POST /ingress/...); None: refused.
    ingress: Ingress | None = None


def json_body(data: Any, status_code: int = 200) -> Response:
    """``data`` as a JSON response, encoded by the C encoder. The pages return this: FastAPI's own
    path validates and walks every value in Python, which doubled the CPU of a 100-item page.
    The routes still declare their response models, for the OpenAPI document."""
    return Response(json.dumps(data, separators=(",", ":"), allow_nan=False), status_code,
                    media_type="application/json")


def services(request: Request) -> ApiServices:
    """The services of the running app (a FastAPI dependency)."""
    svc: ApiServices = request.app.state.services
    return svc


Services = Annotated[ApiServices, Depends(services)]

_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="status-poller"'}


def presented_key(request: Request) -> str | None:
    """The key in ``Authorization: Bearer KEY``, or the password of Basic auth (for browsers)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def caller(request: Request, svc: Services) -> Caller:
    """The authenticated caller, or 401."""
    key = presented_key(request)
    if key is None:
        raise ApiProblem(401, "this route needs an API key: Authorization: Bearer KEY (`poller keys create`)",
                         headers=_UNAUTHORIZED)
    found = svc.keys.check(key)
    if found is None:
        raise ApiProblem(401, "the API key is unknown or revoked", headers=_UNAUTHORIZED)
    return found


def writer(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """A caller allowed to change things, or 403."""
    if who.read_only:
        raise ApiProblem(403, f"key {who.name!r} is read-only; this route changes data")
    return who


Reader = Depends(caller)
Writer = Depends(writer)

#: Documented on every authenticated route.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {problems.MEDIA_TYPE: {}}, "description": text}
    for code, text in ((401, "No API key, or an unknown or revoked one."), (403, "A read-only key tried to write."),
                       (404, "Nothing has that id."), (422, "Bad input; `invalid_params` names each field at fault."))
}


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed.

    A declared Content-Length over the limit is refused before the app runs. A streamed body
    (chunked, no length) is counted as the app reads it; past the limit the read fails and
    whatever the app answers to that failure is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen, over, started = 0, False, False

        async def counting() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            # FastAPI turns a failed body read into its own 400; the client is owed the 413.
            if not over:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, counting, guarded)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = problems.response(413, f"the request body is over {self.limit // (1024 * 1024)} MB")
        await resp(scope, receive, send)


class _TooLarge(Exception):
    pass


#: The groups of routes in /docs, in this order.
TAGS = [
    {"name": "items", "description": "What the poller watches: track one or 10,000 at a time (idempotent), "
                                     "list with labels and cursors, change, untrack, poll now."},
    {"name": "events", "description": "Every change, in stream order; follow `next_cursor` to read them all "
                                      "exactly once, now and later."},
    {"name": "subscriptions", "description": "Webhook subscriptions, their deliveries, tests and recovery."},
    {"name": "operations", "description": "Liveness (/healthz), readiness (/readyz) and the status page (/)."},
]


def create_app(svc: ApiServices) -> FastAPI:
    """The application, with every route."""
    from api import events, ingress, items, pages, subscriptions

    app = FastAPI(
        title="status-poller",
        version="1",
        summary="Watch invoice, order and collection-case status at Nordic providers; every change an event.",
        description="Every `/v1` route needs `Authorization: Bearer KEY` (`poller keys create NAME`). "
                    "Errors are RFC 9457 problem documents naming the field at fault.",
        openapi_tags=TAGS,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = svc
    problems.install(app)
    for module in (items, events, subscriptions, ingress, pages):
        app.include_router(module.router)
    app.add_middleware(BodyLimit)
    return app
