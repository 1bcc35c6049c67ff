"""Amili ARM (Accounts Receivable): the status of an asynchronous batch of documents.

``GET /clients/{clientno}/batches/{batchuuid}`` (https://docs.amili.dev/get-one-batch-3942681e0).
The HTTP status carries the state: 202 still processing, 206 finished with some failures, 200
finished. The body's schema is not documented, so it is read tolerantly.
Auth: a JWT bearer token, either issued to you (``TOKEN``) or from a client-credentials token
service (``AUTH_URL``, ``CLIENT_ID``, ``CLIENT_SECRET``); which service issues it is not documented.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import SecretStr

from worker.credentials import Token
from worker.domain import ItemRef, StatusDocument
from worker.errors import ConfigurationError, ProviderResponseInvalid
from worker.providers.auth import CachedToken, client_credentials_token, with_token
from worker.providers.base import Fetched, HttpClient, ProviderContext
from worker.providers.common import message_of, number, obj, objects, optional_obj, snake
from worker.providers.refs import check_ref, segment
from worker.providers.settings import ProviderSettings, secret

NAME = "amili_arm"

#: HTTP status -> (main status, terminal).
HTTP_STATES = {202: ("processing", False), 206: ("partially_processed", True), 200: ("processed", True)}


class AmiliArmSettings(ProviderSettings):
    """``POLLER_AMILI_ARM__*``."""

    NAME: ClassVar[str] = NAME
    REQUIRED: ClassVar[tuple[str, ...]] = ("base_url", "client_no", "token | auth_url + client_id + client_secret")

    #: Not public in the docs; required.
    base_url: str = ""
    client_no: str | None = None
    #: A long-lived JWT issued to you, or ...
    token: SecretStr | None = None
    #: ... a client-credentials token service.
    auth_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None


class AmiliArmProvider:
    """Polls ARM document batches."""

    name: ClassVar[str] = NAME
    kinds: ClassVar[tuple[str, ...]] = ("batch",)

    def __init__(self, settings: AmiliArmSettings, account: str, ctx: ProviderContext) -> None:
        self.settings, self.account, self.clock = settings, account, ctx.clock
        self.http = HttpClient(NAME, settings.base_url, ctx.http, clock=ctx.clock, describe_error=describe_error)
        self.auth = HttpClient(NAME, settings.auth_url or settings.base_url, ctx.http, session=self.http.session,
                               clock=ctx.clock, describe_error=describe_error)
        self.tokens = CachedToken(self._new_token, ctx.clock)

    def _new_token(self, stale: str | None) -> Token:
        s = self.settings
        if s.client_id:
            s.require(self.account, "auth_url", "client_secret")
            return client_credentials_token(self.auth, client_id=s.client_id, client_secret=secret(s.client_secret),
                                            scope=s.scope, now=self.clock())
        if s.token:
            # A static JWT has no refresh: if the provider rejected it, it is the operator's to replace.
            if secret(s.token) == stale:
                raise ConfigurationError(
                    f"amili_arm rejected the configured token; set a new {s.env_name('token', self.account)}")
            from datetime import timedelta
            now = self.clock()
            return Token(secret(s.token), now + timedelta(days=3650), now)
        raise ConfigurationError(
            f"amili_arm account {self.account!r} has no credentials: set {s.env_name('token', self.account)}, or "
            f"{s.env_name('auth_url', self.account)}, {s.env_name('client_id', self.account)} and "
            f"{s.env_name('client_secret', self.account)}")

    def validate_ref(self, kind: str, ref: str) -> str:
        """A batch UUID as returned by ``POST /documents/batches`` (its format is not documented)."""
        return check_ref(NAME, kind, ref, in_path=True, max_len=100)

    def fetch(self, item: ItemRef, version: str | None) -> Fetched:
        """GET the batch; the HTTP status is part of what is normalized."""
        self.settings.require(self.account, "base_url", "client_no")
        path = f"/clients/{quote(str(self.settings.client_no), safe='')}/batches/{segment(NAME, item.kind, item.ref)}"

        def call(token: str) -> tuple[int, Any]:
            return self.http.request_json("GET", path, allow_empty=True, headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json"})

        status, body = with_token(self.tokens, call)
        return Fetched({"httpStatus": status, "body": body})

    def normalize(self, raw: Any, item: ItemRef) -> StatusDocument:
        """See :func:`normalize`."""
        return normalize(raw)


def describe_error(body: Any) -> str | None:
    """ARM errors carry a ``message`` (and sometimes ``errors``)."""
    return message_of(body, "message", "Message", "error")


def _first(body: dict[str, Any], *keys: str) -> Any:
    return next((body[k] for k in keys if k in body), None)


def normalize(raw: Any) -> StatusDocument:
    """Normalize ``{"httpStatus": 200|202|206, "body": {...}}`` (the shape fetch returns).

    Main status from the HTTP status: ``processing`` (202), ``partially_processed`` (206, terminal),
    ``processed`` (200, terminal). Counts and failed document numbers come from the body when it
    has them.

    Raises:
        ProviderResponseInvalid: another 2xx status, or a body that is not an object.
    """
    wrapper = obj(raw, f"{NAME} response", NAME)
    code = wrapper.get("httpStatus")
    if code not in HTTP_STATES:
        raise ProviderResponseInvalid(f"batch answered HTTP {code!r}; expected 200, 202 or 206", provider=NAME)
    body = optional_obj(wrapper.get("body"), "batch body", NAME) or {}
    results = objects(_first(body, "results", "documents"), "batch results", NAME)
    failed = [r.get("documentNo") for r in results
              if snake(r.get("status")) in ("failed", "error", "rejected") or r.get("success") is False]
    main, terminal = HTTP_STATES[code]
    fields = {
        "http_status": code, "status": snake(body.get("status")),
        "documents_total": number(_first(body, "documentsTotal", "total", "count")),
        "documents_processed": number(_first(body, "documentsProcessed", "processed")),
        "documents_failed": number(_first(body, "documentsFailed", "failed")),
        "failed_documents": failed, "finished": _first(body, "finished", "finishedAt"),
    }
    return StatusDocument(main, terminal, fields, raw)
