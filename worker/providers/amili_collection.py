"""Amili Norway Debt.Collection: invoices, cases and batches under ``/orgs/{orgId}``.

Docs: https://docs.amili.dev/getinvoicebyid-4148069e0, the cases list
(https://docs.amili.dev/getcasesbyorganization-4326442e0), batches
(https://docs.amili.dev/getbatchbyid-4148060e0) and the example workflow
(https://docs.amili.dev/example-workflow-359631m0).
Auth: OAuth2 client credentials at ``{auth}/token``, bearer token cached until shortly before
``expires_on``, one forced refresh and retry on a 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field, SecretStr

from worker.credentials import Token
from worker.domain import ItemRef, StatusDocument
from worker.errors import ItemGone, ProviderResponseInvalid
from worker.providers.auth import CachedToken, client_credentials_token, with_token
from worker.providers.base import Fetched, HttpClient, ProviderContext
from worker.providers.common import message_of, number, obj, objects, snake
from worker.providers.refs import check_ref, segment
from worker.providers.settings import SweepingSettings, secret

NAME = "amili_collection"

#: Batch statuses that end polling ("poll until ... SUCCESS, PARTIAL, or FAILED").
FINAL_BATCH = {"success", "partial", "failed"}
#: A sweep reads the open invoices this many a page (the cases list documents PageSize; 100 is the
#: largest page the other Amili APIs document).
SWEEP_PAGE = 100
#: A sweep reading more pages than this fails rather than running on.
MAX_PAGES = 10_000
#: Statuses that close an invoice or case even when ``closedAt`` is missing [I].
FINAL_STATUS = {"closed", "withdrawn", "cancelled", "canceled", "paid", "terminated"}


class AmiliCollectionSettings(SweepingSettings):
    """``POLLER_AMILI_COLLECTION__*``."""

    NAME: ClassVar[str] = NAME
    REQUIRED: ClassVar[tuple[str, ...]] = ("base_url", "auth_url", "client_id", "client_secret", "org_id")

    #: Staging: https://api.staging.amili.no/collection/v1
    base_url: str = "https://api.amili.no/collection/v1"
    #: Identiverse; staging: https://auth.staging.amili.no
    auth_url: str = "https://auth.amili.no"
    client_id: str | None = None
    client_secret: SecretStr | None = None
    org_id: str | None = None
    #: Optional OAuth2 scope (reading needs none in the docs).
    scope: str | None = None
    #: The unguessable token in the push URL (/ingress/amili_collection/<account>/<token>): Amili
    #: does not document its signature scheme, so the path is the proof. At least 32 characters.
    push_token: SecretStr | None = Field(None, min_length=32)


class AmiliCollectionProvider:
    """Polls collection invoices, cases and batches."""

    name: ClassVar[str] = NAME
    kinds: ClassVar[tuple[str, ...]] = ("invoice", "case", "batch")
    #: A sweep lists the open invoices (worker.sweeps.Listing): invoice items, status ``open``.
    listed_kinds: ClassVar[tuple[str, ...]] = ("invoice",)
    listed_statuses: ClassVar[frozenset[str]] = frozenset({"open"})

    def __init__(self, settings: AmiliCollectionSettings, account: str, ctx: ProviderContext) -> None:
        self.settings, self.account = settings, account
        self.http = HttpClient(NAME, settings.base_url, ctx.http, clock=ctx.clock, describe_error=describe_error)
        # The token service gets its own client (other host) but shares the connection pool.
        auth = HttpClient(NAME, settings.auth_url, ctx.http, session=self.http.session, clock=ctx.clock,
                          describe_error=describe_error)
        self.auth, self.clock = auth, ctx.clock
        self.tokens = CachedToken(self._new_token, ctx.clock)

    def _new_token(self, stale: str | None) -> Token:
        self.settings.require(self.account, "client_id", "client_secret")
        return client_credentials_token(self.auth, client_id=str(self.settings.client_id),
                                        client_secret=secret(self.settings.client_secret),
                                        scope=self.settings.scope, now=self.clock())

    def validate_ref(self, kind: str, ref: str) -> str:
        """Invoice and batch ids are opaque ids (UUIDs in the docs) and go into the path; a case is
        its case number, sent as a query parameter."""
        return check_ref(NAME, kind, ref, in_path=kind != "case")

    def fetch(self, item: ItemRef, version: str | None) -> Fetched:
        """GET the invoice, the case (by case number) or the batch, with a bearer token."""
        self.settings.require(self.account, "org_id")
        org = quote(str(self.settings.org_id), safe="")
        if item.kind == "invoice":
            return Fetched(self._get(f"/orgs/{org}/invoices/{segment(NAME, item.kind, item.ref)}"))
        if item.kind == "batch":
            return Fetched(self._get(f"/orgs/{org}/batches/{segment(NAME, item.kind, item.ref)}"))
        body = self._get(f"/orgs/{org}/cases", params={"CaseNumber": item.ref})
        cases = objects(obj(body, "cases body", NAME).get("data"), "cases data", NAME)
        match = [c for c in cases if str(c.get("caseNumber")) == item.ref] or cases[:1]
        if not match:
            raise ItemGone(f"no case with CaseNumber {item.ref}", provider=NAME, status_code=200)
        # Kept in the same envelope as the single reads, so one normalizer serves both.
        return Fetched({"summary": body.get("summary"), "data": match[0]})

    def listing(self, now: datetime) -> Iterator[list[tuple[str, str, StatusDocument]]]:
        """The organisation's open invoices, one list per page, each normalized as its own read
        (``GET /orgs/{org}/invoices?Status=OPEN&PageSize=100``, then each ``summary.nextPageToken``
        as ``PageToken``; https://docs.amili.dev/getinvoicesbyorganization-4148068e0). No "updated
        since" filter is documented, so every sweep reads them all: one request per 100 open
        invoices instead of one per invoice.

        Raises:
            ProviderError: a page failed, or is not a page of invoices.
        """
        self.settings.require(self.account, "org_id")
        path = f"/orgs/{quote(str(self.settings.org_id), safe='')}/invoices"
        token: str | None = None
        for _ in range(MAX_PAGES):
            params = {"Status": "OPEN", "PageSize": str(SWEEP_PAGE)}
            if token:
                params["PageToken"] = token
            body = obj(self._get(path, params=params), "invoices page", NAME)
            page = objects(body.get("data"), "invoices data", NAME)
            yield [("invoice", str(data.get("id")), normalize_invoice({"data": data})) for data in page]
            summary = body.get("summary")
            token = summary.get("nextPageToken") if isinstance(summary, dict) else None
            if not token:
                return
        raise ProviderResponseInvalid(f"the invoice list went on past {MAX_PAGES} pages", provider=NAME)

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        def call(token: str) -> Any:
            return self.http.request_json("GET", path, params=params, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json"})[1]
        return with_token(self.tokens, call)

    def normalize(self, raw: Any, item: ItemRef) -> StatusDocument:
        """See :func:`normalize_batch` and :func:`normalize_invoice`."""
        return normalize_batch(raw) if item.kind == "batch" else normalize_invoice(raw)


def describe_error(body: Any) -> str | None:
    """Error bodies: ``{"errors": [{"code", "message"}]}``, OAuth's ``{"error", "error_description"}``,
    or a message."""
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("errors"), list):
        parts = [f"{e.get('code') or e.get('Code')}: {e.get('message') or e.get('Message')}"
                 for e in body["errors"] if isinstance(e, dict)]
        return "; ".join(parts) or None
    if body.get("error"):
        return f"{body['error']}: {body.get('error_description', '')}".rstrip(": ")
    return message_of(body, "message", "Message")


def _data(raw: Any) -> dict[str, Any]:
    body = obj(raw, f"{NAME} body", NAME)
    return obj(body.get("data"), f"{NAME} data", NAME)


def normalize_invoice(raw: Any) -> StatusDocument:
    """Normalize an invoice (``GET /invoices/{id}``) or a case (``GET /cases`` element).

    Enum values are folded to one spelling, so the old (``Open``, ``NOTICE``) and new (``OPEN``,
    ``PAYMENT_REMINDER``) API generations give the same fields. Terminal when ``closedAt`` is set
    (the docs give no full status list), or the status says closed.

    Raises:
        ProviderResponseInvalid: no ``data`` object, or it has no ``id``.
    """
    data = _data(raw)
    if not data.get("id"):
        raise ProviderResponseInvalid(f"{NAME} data has no id", provider=NAME)
    claims = [{"type": snake(c.get("type")), "original_amount": number(c.get("originalAmount")),
               "current_amount": number(c.get("currentAmount")), "paid_amount": number(c.get("paidAmount")),
               "currency": c.get("currency")} for c in objects(data.get("claims"), "claims", NAME)]
    status, kind = snake(data.get("status")), snake(data.get("type"))
    fields = {
        "status": status, "type": kind,
        "original_amount": number(data.get("originalInvoiceAmount", data.get("originalAmount"))),
        "current_amount": number(data.get("currentAmount")), "paid_amount": number(data.get("paidAmount")),
        "currency": data.get("currency"), "closed_at": data.get("closedAt"), "claims": claims,
        "case_number": data.get("collectionCaseNumber", data.get("caseNumber")),
    }
    terminal = bool(data.get("closedAt")) or status in FINAL_STATUS
    main = status or "unknown"
    if terminal and main not in FINAL_STATUS:
        main = "closed"
    return StatusDocument(main, terminal, fields, raw)


def normalize_batch(raw: Any) -> StatusDocument:
    """Normalize a batch: status QUEUED ... SUCCESS / PARTIAL / FAILED (terminal), counts, failures."""
    data = _data(raw)
    if not data.get("batchId") and not data.get("id"):
        raise ProviderResponseInvalid(f"{NAME} batch has no batchId", provider=NAME)
    status = snake(data.get("status"))
    succeeded = data.get("succeeded")
    failed = data.get("failed")
    fields = {
        "status": status, "finished_at": data.get("finishedAt"),
        "succeeded": len(succeeded) if isinstance(succeeded, list) else number(succeeded),
        "failed": len(failed) if isinstance(failed, list) else number(failed),
        "failures": [f.get("reference") for f in failed if isinstance(f, dict)] if isinstance(failed, list) else [],
    }
    return StatusDocument(status or "unknown", status in FINAL_BATCH, fields, raw)

