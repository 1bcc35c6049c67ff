"""Liveness, readiness and the status page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api.app import Services, caller
from api.dashboard import render_page
from api.problems import ApiProblem

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive and serving. Touches nothing else (no database), so it answers in
    milliseconds; use /readyz for the poller's dependencies."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A check failed; `checks` names it."}})
def readyz(svc: Services) -> JSONResponse:
    """Ready when the database and broker answer and the dispatch tick is fresh: 200, else 503
    with the failing checks named. Runs no migration."""
    checks = svc.readiness()
    failing = [c.name for c in checks if not c.ok]
    body: dict[str, Any] = {"status": "fail" if failing else "ok", "failing": failing,
                            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]}
    if failing:
        body.update(type="about:blank", title="Service Unavailable", status=503,
                    detail="not ready: " + ", ".join(failing))
        return JSONResponse(body, status_code=503, media_type="application/problem+json")
    return JSONResponse(body)


@router.get("/", response_class=HTMLResponse)
def status_page(request: Request, svc: Services) -> HTMLResponse:
    """The status page: figures, failing items, subscriptions, latest events. Needs a key
    (Basic auth with the key as password, for browsers) unless POLLER_DASHBOARD_PUBLIC=true."""
    if not svc.dashboard_public:
        try:
            caller(request, svc)
        except ApiProblem as err:
            # A browser asks for the key when told Basic.
            raise ApiProblem(err.status, err.detail, headers={"WWW-Authenticate": 'Basic realm="status-poller"'}) \
                from None
    return HTMLResponse(render_page(svc.page_data(), svc.refresh_s), headers={"Cache-Control": "no-store"})
