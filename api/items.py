"""`/v1/items`: track (one or a batch, idempotent), list, read, change, untrack, poll now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api import problems
from api.deps import PROBLEMS, Reader, Services, Writer, json_body
from worker.catalog import MAX_BATCH, ItemSpec, Refused
from worker.views import item_dict, snapshot_dict

router = APIRouter(prefix="/v1/items", tags=["items"], responses=PROBLEMS)

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


class ItemIn(BaseModel):
    """An item to track. The same provider, account, kind and ref again updates the item
    (interval, labels, external_id as given; what is left out stays)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    provider: str = Field(max_length=40, examples=["billit"])
    ref: str = Field(min_length=1, max_length=200, examples=["1001"],
                     description="What the provider's status endpoint needs, e.g. an OrderID.")
    kind: str | None = Field(None, max_length=40, description="Resource kind; the provider's first when left out.")
    account: str | None = Field(None, max_length=80, description="Configured account; `default` when left out.")
    interval_seconds: float | None = Field(None, description="Seconds between polls, 0.1 s to 31 days.")
    labels: dict[str, str] | None = Field(None, examples=[{"customer": "acme"}],
                                          description="Your labels; every event of the item carries them.")
    external_id: str | None = Field(None, max_length=200, description="Your id for the item, carried in events.")

    def spec(self) -> ItemSpec:
        """The service layer's form."""
        return ItemSpec(provider=self.provider, ref=self.ref, kind=self.kind, account=self.account,
                        interval_s=self.interval_seconds, labels=self.labels, external_id=self.external_id)


class BatchIn(BaseModel):
    """Up to 10,000 items; each is checked on its own, so one bad entry refuses only itself."""

    items: list[dict[str, Any]] = Field(max_length=MAX_BATCH,
                                        json_schema_extra={"items": {"$ref": "#/components/schemas/ItemIn"}})


class ItemPatch(BaseModel):
    """What may change on a tracked item."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    interval_seconds: float | None = None
    labels: dict[str, str] | None = None
    external_id: str | None = Field(None, max_length=200)
    paused: bool | None = None


class Item(BaseModel):
    """A tracked item."""

    model_config = ConfigDict(extra="allow")

    id: int
    provider: str
    account: str
    kind: str
    ref: str
    interval_seconds: float
    state: str
    labels: dict[str, str]
    external_id: str | None
    last_status: str | None
    next_poll_at: str | None


class ItemPage(BaseModel):
    """A page of items; follow ``next_cursor`` until it is null."""

    data: list[dict[str, Any]]
    next_cursor: str | None


def _one(item: Any) -> dict[str, Any]:
    return item_dict(item)


@router.post("", status_code=201, responses={200: {"description": "Already tracked: updated, same id."}},
             response_model=Item, dependencies=[Writer])
def create_item(body: ItemIn, svc: Services, response: Response) -> dict[str, Any]:
    """Track an item (201), or update the one already tracked under the same identity (200)."""
    item, created = svc.catalog.upsert(body.spec())
    response.status_code = 201 if created else 200
    return _one(item)


@router.post("/batch", dependencies=[Writer])
def create_items(body: BatchIn, svc: Services) -> Response:
    """Track many items at once: one result per input, in order, `{id, created}` or a problem."""
    specs: list[ItemSpec | dict[str, Any]] = []
    for n, raw in enumerate(body.items):
        try:
            specs.append(ItemIn.model_validate(raw).spec())
        except ValidationError as err:
            params = [{"name": f"items[{n}].{p['name']}", "reason": p["reason"]}
                      for p in problems.validation_params(list(err.errors()))]
            specs.append(problems.problem(422, problems.summary(params), params=params))
    checked = [s for s in specs if isinstance(s, ItemSpec)]
    done = iter(svc.catalog.upsert_many(checked))
    results: list[dict[str, Any]] = []
    for n, s in enumerate(specs):
        if not isinstance(s, ItemSpec):
            results.append(s)
            continue
        r = next(done)
        if isinstance(r, Refused):
            doc = problems.from_error(r.error)
            for p in doc.get("invalid_params") or []:
                p["name"] = f"items[{n}].{p['name']}"
            results.append(doc)
        else:
            results.append({"id": r[0], "created": r[1]})
    return json_body({"results": results,
                      "created": sum(1 for r in results if r.get("created") is True),
                      "updated": sum(1 for r in results if r.get("created") is False),
                      "refused": sum(1 for r in results if "status" in r)})


@router.get("", response_model=ItemPage, dependencies=[Reader])
def list_items(
    svc: Services, limit: Limit = 100, cursor: Cursor = None,
    provider: str | None = None, account: str | None = None, kind: str | None = None,
    state: Annotated[str | None, Query(description="active, terminal, paused or gone.")] = None,
    external_id: str | None = None,
    label: Annotated[list[str], Query(description="key:value; repeat for all of several.")] = [],  # noqa: B006
) -> Response:
    """Items in id order. Following `next_cursor` visits every item once, also while items are added."""
    rows, nxt = svc.catalog.page(cursor=cursor, limit=limit, provider=provider, account=account, kind=kind,
                                 state=state, external_id=external_id, labels=label)
    return json_body({"data": [_one(i) for i in rows], "next_cursor": nxt})


@router.get("/{item_id}", dependencies=[Reader])
def get_item(item_id: int, svc: Services) -> Response:
    """An item with its latest snapshot (null before the first successful poll)."""
    item, snap = svc.catalog.get(item_id)
    return json_body({**_one(item), "snapshot": snapshot_dict(snap) if snap else None})


@router.patch("/{item_id}", response_model=Item, dependencies=[Writer])
def patch_item(item_id: int, body: ItemPatch, svc: Services) -> dict[str, Any]:
    """Change the interval, labels (replaced as a whole) or external id; pause or resume."""
    item = svc.catalog.change(item_id, interval_s=body.interval_seconds, labels=body.labels,
                              external_id=body.external_id, paused=body.paused)
    return _one(item)


@router.delete("/{item_id}", status_code=204, dependencies=[Writer])
def delete_item(item_id: int, svc: Services) -> Response:
    """Stop tracking; the item's events stay."""
    svc.catalog.untrack(item_id)
    return Response(status_code=204)


@router.get("/{item_id}/snapshots", dependencies=[Reader])
def item_snapshots(item_id: int, svc: Services, limit: Limit = 50, cursor: Cursor = None) -> Response:
    """The item's stored documents, newest first (one per change)."""
    rows, nxt = svc.catalog.snapshots(item_id, cursor=cursor, limit=limit)
    return json_body({"data": [snapshot_dict(s) for s in rows], "next_cursor": nxt})


@router.post("/{item_id}/poll", status_code=202, dependencies=[Writer])
def poll_item(item_id: int, svc: Services) -> dict[str, Any]:
    """Poll now: the item is due at the next dispatch tick (already due if a poll is under way)."""
    item, scheduled = svc.catalog.poll_now(item_id)
    return {"id": item.id, "scheduled": scheduled, "next_poll_at": item_dict(item)["next_poll_at"]}
