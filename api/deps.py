"""What every route shares: the services, JSON bodies, the caller behind an API key, and the
problems documented on each authenticated route (FastAPI dependencies). The routes and the
application (api.app) import these; nothing here imports a route."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from api import problems
from api.problems import ApiProblem, Problem
from worker.apikeys import ApiKeys, Caller
from worker.catalog import Catalog
from worker.feed import EventFeed
from worker.ingress import Ingress
from worker.status import Check
from worker.subscriptions import Subscriptions


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
