"""The poller's front door: one FastAPI application for the services that use it.

Routes are thin: each checks its input and calls the same service layer as the CLI (worker.catalog,
worker.feed, worker.subscriptions, worker.apikeys, worker.status). Served by `poller api`, and by
`poller run` beside the worker and beat.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import events, ingress, items, pages, problems, subscriptions
from api.deps import ApiServices

#: The largest request body accepted (a 10,000-item batch is about 2 MB).
MAX_BODY_BYTES = 10 * 1024 * 1024


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
