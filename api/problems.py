"""Errors as RFC 9457 problem documents (``application/problem+json``), naming the field at fault.

Every error the API returns goes through here: our own (``PollerError``), request validation,
unknown routes and methods, oversized bodies, and bugs (a 500 that says nothing internal).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from worker.errors import ConfigurationError, Conflict, CursorExpired, InputError, NotFound, PollerError

log = structlog.get_logger(__name__)

MEDIA_TYPE = "application/problem+json"


class InvalidParam(BaseModel):
    """One field or parameter at fault."""

    name: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    invalid_params: list[InvalidParam] | None = None


class ApiProblem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field, self.headers = status, detail, field, headers


def problem(status: int, detail: str | None, *, params: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A problem document as a dict."""
    known = HTTPStatus(status)
    # Every problem says something a person can act on, even when the raiser gave no words.
    doc: dict[str, Any] = {"type": "about:blank", "title": known.phrase, "status": status,
                           "detail": detail or known.description}
    if params:
        doc["invalid_params"] = params
    return doc


def response(status: int, detail: str | None, *, params: list[dict[str, str]] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    """A problem response."""
    return JSONResponse(problem(status, detail, params=params), status_code=status, media_type=MEDIA_TYPE,
                        headers=headers)


def status_of(err: PollerError) -> int:
    """The HTTP status for one of our errors, by how it is handled."""
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Conflict):
        return 409
    if isinstance(err, CursorExpired):
        return 410
    if isinstance(err, InputError):
        return 422
    if isinstance(err, ConfigurationError):
        return 503
    return 500


def from_error(err: InputError) -> dict[str, Any]:
    """A problem document for an input error (a batch entry that was refused)."""
    status = status_of(err)
    params = [{"name": err.field, "reason": str(err)}] if err.field else None
    return problem(status, str(err), params=params)


def location(loc: tuple[Any, ...] | list[Any]) -> str:
    """Pydantic's error location as a field path: ``("body", "items", 3, "ref")`` -> ``items[3].ref``."""
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "body"):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def validation_params(errors: list[Any]) -> list[dict[str, str]]:
    """Pydantic errors as invalid-params entries."""
    return [_param(e) for e in errors]


def _param(error: Any) -> dict[str, str]:
    if error.get("type") == "json_invalid":
        # FastAPI puts the character offset where a field name would be: the field is the body.
        loc = error.get("loc", ())
        at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        why = (error.get("ctx") or {}).get("error", "")
        return {"name": "body", "reason": f"malformed JSON{at}" + (f": {why}" if why else "")}
    return {"name": location(error.get("loc", ())), "reason": str(error.get("msg", "invalid"))}


def summary(params: list[dict[str, str]]) -> str:
    """One sentence naming the fields at fault."""
    first = params[0]
    more = f" (and {len(params) - 1} more)" if len(params) > 1 else ""
    return f"{first['name']}: {first['reason']}{more}"


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on the request's path."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Route every error through a problem document."""

    @app.exception_handler(ApiProblem)
    async def _api_problem(request: Request, err: ApiProblem) -> JSONResponse:
        params = [{"name": err.field, "reason": err.detail}] if err.field else None
        return response(err.status, err.detail, params=params, headers=err.headers)

    @app.exception_handler(PollerError)
    async def _poller_error(request: Request, err: PollerError) -> JSONResponse:
        status = status_of(err)
        if status >= 500:
            log.error("api.error", path=request.url.path, error=str(err))
        field = getattr(err, "field", None)
        return response(status, str(err), params=[{"name": field, "reason": str(err)}] if field else None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        params = validation_params(list(err.errors()))
        return response(422, summary(params), params=params)

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, err: ValidationError) -> JSONResponse:
        params = validation_params(list(err.errors()))
        return response(422, summary(params), params=params)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        detail = err.detail if isinstance(err.detail, str) and err.detail != HTTPStatus(err.status_code).phrase \
            else None
        headers = getattr(err, "headers", None)
        if err.status_code == 404 and detail is None:
            detail = f"no route {request.method} {request.url.path}"
        if err.status_code == 405:
            # The route that refused knows only its own methods; the path may have others.
            allowed = ", ".join(allowed_methods(request))
            headers = {**(headers or {}), "Allow": allowed}
            detail = detail or f"{request.url.path} does not take {request.method}; it takes {allowed}"
        return response(err.status_code, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("api.internal_error", path=request.url.path)
        return response(500, "internal error; the poller's log has the details")
