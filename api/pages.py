"""Liveness, readiness and the status page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api.dashboard import render_page
from api.deps import ApiServices, Services, caller
from api.problems import ApiProblem

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving. Touches nothing else (no database), so it answers in
    milliseconds; use /readyz for the poller's dependencies."""
    # async: answered on the event loop, so it stays fast when every worker thread waits on a
    # database that hangs.
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


def _page_allowed(request: Request, svc: ApiServices) -> None:
    """The status page's rule: any valid key, unless the page is public."""
    if svc.dashboard_public:
        return
    try:
        caller(request, svc)
    except ApiProblem as err:
        # A browser asks for the key when told Basic.
        raise ApiProblem(err.status, err.detail, headers={"WWW-Authenticate": 'Basic realm="status-poller"'}) \
            from None


_PAGE_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "No key, or an unknown one (unless POLLER_DASHBOARD_PUBLIC=true)."}}


@router.get("/", response_class=HTMLResponse, responses=_PAGE_AUTH)
def status_page(request: Request, svc: Services) -> HTMLResponse:
    """The status page: figures, failing items, subscriptions, latest events. Needs a key
    (Basic auth with the key as password, for browsers) unless POLLER_DASHBOARD_PUBLIC=true."""
    _page_allowed(request, svc)
    return HTMLResponse(render_page(svc.page_data(), svc.refresh_s), headers={"Cache-Control": "no-store"})


@router.get("/status.json", responses=_PAGE_AUTH)
def status_json(request: Request, svc: Services) -> JSONResponse:
    """What the status page shows, as JSON; the same key rule as the page."""
    _page_allowed(request, svc)
    return JSONResponse(svc.page_data(), headers={"Cache-Control": "no-store"})
