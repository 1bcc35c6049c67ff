"""`POST /ingress/{provider}/{account}[/{token}]`: pushes from the providers themselves (issue 14).

No API key: a provider cannot send one. Billit's pushes are believed on their signature, Amili
Norway's on the account's unguessable path token (worker.pushes says why). A believed push makes
the items it names due now; the answer never echoes the body.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from api import problems
from api.deps import Services, json_body
from worker.pushes import MAX_BODY_BYTES, PushRefused

router = APIRouter(prefix="/ingress", tags=["ingress"], include_in_schema=True)

_RESPONSES: dict[int | str, dict[str, Any]] = {
              202: {"description": "Believed: the items named are due now (`items`), or none is tracked."},
              200: {"description": "A push already seen (same IdempotencyKey): nothing more to do."},
              401: {"description": "Unsigned, forged, stale or wrong token: nothing polled."},
              404: {"description": "No such pushing provider or account."},
              413: {"description": f"Body over {MAX_BODY_BYTES:,} bytes."},
              429: {"description": "Over the account's push rate (`Retry-After`)."}}


async def _push(request: Request, svc: Services, provider: str, account: str, token: str | None) -> object:
    try:
        body = await request.body()  # at most 10 MB (the app's body limit); a push may be 1 MB
        if svc.ingress is None:
            raise PushRefused(404, "unknown_account", "this API does not take pushes")
        result = await run_in_threadpool(svc.ingress.accept, provider, account, token=token,
                                         headers={k.lower(): v for k, v in request.headers.items()}, body=body)
    except PushRefused as err:
        headers = {"Retry-After": str(max(1, math.ceil(err.retry_after_s)))} if err.retry_after_s else None
        return problems.response(err.status, str(err), headers=headers)
    return json_body(result.to_dict(), 200 if result.outcome == "duplicate" else 202)


@router.post("/{provider}/{account}", responses=_RESPONSES, summary="A provider's push (Billit: signed)")
async def push(request: Request, svc: Services, provider: str, account: str) -> object:
    """A push from Billit, verified by its `Billit-Signature`."""
    return await _push(request, svc, provider, account, None)


@router.post("/{provider}/{account}/{token}", responses=_RESPONSES,
             summary="A provider's push on a path token (Amili Norway)")
async def push_with_token(request: Request, svc: Services, provider: str, account: str, token: str) -> object:
    """A push from Amili Norway, believed on the account's `push_token` in the path."""
    return await _push(request, svc, provider, account, token)
