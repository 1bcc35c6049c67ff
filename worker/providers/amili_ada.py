"""Amili Sweden (ADA) cases, found by case id or by the creditor's invoice number.

Docs: https://docs-test.amili.se/reference/examples/case-status (the case's fields),
https://docs.amili.se/reference/common/authentication, https://docs-sandbox.amili.se/reference/common/query
and https://docs.amili.se/reference/common/pagination. Auth: a JWT ``{"api_code", "exp"}`` signed with the
customer's private key is exchanged at ``GET /authenticates/api-code`` for an access token, sent
as ``X-API-Key`` on every call. The exchange's response field names are not documented: the
token is taken from the first of several likely keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

import jwt
from pydantic import Field, SecretStr

from worker.credentials import Token
from worker.domain import ItemRef, StatusDocument
from worker.errors import ConfigurationError, ItemGone, ProviderResponseInvalid
from worker.providers.auth import CachedToken, parse_time, token_from_response, with_token
from worker.providers.base import Fetched, HttpClient, ProviderContext
from worker.providers.common import message_of, naive_utc, number, obj, objects, rfc1123_to_iso
from worker.providers.refs import check_ref, segment
from worker.providers.settings import SweepingSettings, secret
from worker.sweep_marks import Mark, SweepEntry

NAME = "amili_ada"

#: Where the access token may be in the api-code response (its shape is not documented).
TOKEN_KEYS = ("token", "access_token", "accessToken", "api_key", "apiKey", "key", "_token")
#: A sweep reads the cases most recently updated first, this many a page (the documented maximum).
SWEEP_PAGE = 100
#: ... and stops this far before the watermark (``_updated`` has whole seconds: see worker.sweep_marks).
SWEEP_OVERLAP = timedelta(seconds=5)
#: A first sweep (no watermark yet) reads back this far on our clock.
FIRST_SWEEP_LOOKBACK = timedelta(days=1)
#: A sweep reading more pages than this fails rather than running on.
MAX_PAGES = 10_000
#: Remaining-amount fields kept (the ``total_remaining_*_amount`` family).
REMAINING = ("capital", "costs", "interest", "transaction")


class AmiliAdaSettings(SweepingSettings):
    """``POLLER_AMILI_ADA__*``."""

    NAME: ClassVar[str] = NAME
    REQUIRED: ClassVar[tuple[str, ...]] = ("base_url", "api_code", "private_key | private_key_file")

    #: Sandbox: https://api-sandbox.amili.se
    base_url: str = "https://api.amili.se"
    api_code: SecretStr | None = None
    #: The registered private key, PEM text, or a file holding it.
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    algorithm: Literal["ES256", "ES384", "ES512", "RS256", "RS384", "RS512"] = "ES512"
    #: JWT ``exp`` this far ahead ("about 10 minutes" in the docs).
    jwt_lifetime_seconds: float = Field(600.0, gt=0, le=900)
    #: Access-token lifetime assumed when the response does not say (not documented).
    token_lifetime_seconds: float = Field(600.0, gt=0)


class AmiliAdaProvider:
    """Polls Swedish collection cases."""

    name: ClassVar[str] = NAME
    kinds: ClassVar[tuple[str, ...]] = ("case", "invoice")
    overlap: ClassVar[timedelta] = SWEEP_OVERLAP
    #: Discovery tracks a listed case by its id (not its invoice number too: one item per case).
    discover_kinds: ClassVar[tuple[str, ...]] = ("case",)

    def __init__(self, settings: AmiliAdaSettings, account: str, ctx: ProviderContext) -> None:
        self.settings, self.account, self.clock = settings, account, ctx.clock
        self.http = HttpClient(NAME, settings.base_url, ctx.http, clock=ctx.clock, describe_error=describe_error)
        self.tokens = CachedToken(self._new_token, ctx.clock)

    def _private_key(self) -> str:
        s = self.settings
        if s.private_key:
            return secret(s.private_key)
        if s.private_key_file:
            try:
                return s.private_key_file.read_text()
            except OSError as err:
                raise ConfigurationError(
                    f"{s.env_name('private_key_file', self.account)}: cannot read {s.private_key_file}: "
                    f"{err.strerror}") from None
        raise ConfigurationError(f"amili_ada account {self.account!r} is not configured: set "
                                 f"{s.env_name('private_key', self.account)} or "
                                 f"{s.env_name('private_key_file', self.account)}")

    def signed_jwt(self) -> str:
        """The JWT the docs ask for: ``{"api_code", "exp"}`` signed with the private key."""
        s = self.settings
        s.require(self.account, "api_code")
        exp = self.clock() + timedelta(seconds=s.jwt_lifetime_seconds)
        try:
            return jwt.encode({"api_code": secret(s.api_code), "exp": int(exp.timestamp())},
                              self._private_key(), algorithm=s.algorithm)
        except (ValueError, TypeError, jwt.PyJWTError) as err:
            # The message must not quote the key.
            raise ConfigurationError(
                f"amili_ada account {self.account!r}: the private key cannot sign {s.algorithm} "
                f"({type(err).__name__}); check {s.env_name('private_key', self.account)} and "
                f"{s.env_name('algorithm', self.account)}") from None

    def _new_token(self, stale: str | None) -> Token:
        _, body = self.http.request_json("GET", "/authenticates/api-code", not_found_is_gone=False,
                                         headers={"X-API-Key": self.signed_jwt()})
        token = token_from_response(body, now=self.clock(), provider=NAME, token_keys=TOKEN_KEYS,
                                    default_lifetime_s=self.settings.token_lifetime_seconds)
        # A JWT access token knows its own expiry better than our default.
        try:
            claims = jwt.decode(token.value, options={"verify_signature": False})
            exp = parse_time(claims.get("exp"))
            if exp and exp < token.expires_at:
                token = Token(token.value, exp, token.issued_at)
        except jwt.PyJWTError:
            pass
        return token

    def validate_ref(self, kind: str, ref: str) -> str:
        """A case id (in the path), or a creditor invoice number (in a query)."""
        return check_ref(NAME, kind, ref, in_path=kind == "case")

    def fetch(self, item: ItemRef, version: str | None) -> Fetched:
        """``GET /cases/{id}`` (conditional on the last ``_etag``) or ``GET /cases?where=...``."""
        if item.kind == "case":
            headers = {}
            if version:
                headers["If-None-Match"] = f'"{version}"'
            status, body = self._get(f"/cases/{segment(NAME, item.kind, item.ref)}", headers=headers)
            if status == 304:
                return Fetched(None, version=version, not_modified=True)
            case = obj(body, "case", NAME)
        else:
            _, body = self._get("/cases", params={
                "where": json.dumps({"debt.invoice_number": item.ref}), "sort": "-_created", "max_results": "10"})
            items = objects(obj(body, "cases page", NAME).get("_items"), "_items", NAME)
            if not items:
                raise ItemGone(f"no case has debt.invoice_number {item.ref!r}", provider=NAME, status_code=200)
            # Newest first, should a number ever be reused.
            case = max(items, key=_created)
        etag = case.get("_etag")
        return Fetched(case, version=str(etag) if etag else None)

    def sweep(self, mark: Mark, now: datetime) -> Iterator[list[SweepEntry]]:
        """The cases updated since ``mark``, newest first, one list of entries per page:
        ``GET /cases?sort=-_updated&max_results=100&page=N`` until a case older than the watermark
        (less the overlap) or the last page. Each case names two items: the case by ``_id`` and
        the invoice by ``debt.invoice_number``. A case updated while the pages are read moves to
        the first page: it may be read twice, never skipped (its change is the next sweep's).

        Raises:
            ProviderError: a page failed (the caller keeps its watermark), or is not a page of cases.
        """
        floor = naive_utc(now - FIRST_SWEEP_LOOKBACK) if mark.key is None else mark.key - SWEEP_OVERLAP
        for page in range(1, MAX_PAGES + 1):
            _, body = self._get("/cases", params={"sort": "-_updated", "max_results": str(SWEEP_PAGE),
                                                  "page": str(page)})
            cases = objects(obj(body, "cases page", NAME).get("_items"), "_items", NAME)
            entries, older = [], False
            for case in cases:
                modified = str(case.get("_updated") or "")
                key = self.parse_modified(modified)
                if key < floor:
                    older = True
                    break
                entries.append(SweepEntry("case", str(case.get("_id")), modified, key, attrs=case))
                invoice = case["debt"].get("invoice_number") if isinstance(case.get("debt"), dict) else None
                if invoice not in (None, ""):
                    entries.append(SweepEntry("invoice", str(invoice), modified, key))
            yield entries
            if older or len(cases) < SWEEP_PAGE:
                return
        raise ProviderResponseInvalid(f"the case list went on past {MAX_PAGES} pages", provider=NAME)

    def parse_modified(self, text: str) -> datetime:
        """An RFC 1123 ``_updated`` (``Tue, 07 Oct 2025 07:41:01 GMT``), as a zone-less UTC time.

        Raises:
            ProviderResponseInvalid: not such a date.
        """
        moment = parse_time(text) if text and not text.strip().isdigit() else None
        if moment is None:
            raise ProviderResponseInvalid(f"_updated {text!r} is not an RFC 1123 date", provider=NAME)
        return naive_utc(moment)

    def _get(self, path: str, *, headers: dict[str, str] | None = None,
             params: dict[str, str] | None = None) -> tuple[int, Any]:
        def call(token: str) -> tuple[int, Any]:
            return self.http.request_json("GET", path, params=params,
                                          headers={"X-API-Key": token, "Accept": "application/json", **(headers or {})})
        return with_token(self.tokens, call)

    def normalize(self, raw: Any, item: ItemRef) -> StatusDocument:
        """See :func:`normalize`."""
        return normalize(raw)


def describe_error(body: Any) -> str | None:
    """Eve errors: ``{"_status": "ERR", "_error": {"code", "message"}}``."""
    if isinstance(body, dict):
        err = body.get("_error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("code"))
        if isinstance(err, str):
            return err
    return message_of(body, "message", "error")


def normalize(raw: Any) -> StatusDocument:
    """Normalize a case: ``state``, ``status``, ``customer_status``, the remaining amounts, the lengths
    of ``state_history`` and ``status_history``, ``latest_state_date`` and ``closed`` (RFC 1123 dates
    as ISO 8601). Terminal when ``closed`` is set (the docs list no final state values).

    Raises:
        ProviderResponseInvalid: not an object, or no ``_id``.
    """
    case = obj(raw, "case", NAME)
    if not case.get("_id"):
        raise ProviderResponseInvalid("case has no _id", provider=NAME)
    closed = case.get("closed")
    if isinstance(closed, dict):
        closed = {k: rfc1123_to_iso(v) for k, v in sorted(closed.items())}
    fields = {
        "state": case.get("state"), "status": case.get("status"), "customer_status": case.get("customer_status"),
        "remaining": {k: number(case.get(f"total_remaining_{k}_amount")) for k in REMAINING},
        "state_history_length": _length(case.get("state_history")),
        "status_history_length": _length(case.get("status_history")),
        "latest_state_date": rfc1123_to_iso(case.get("latest_state_date")),
        "closed": closed,
        "invoice_number": case["debt"].get("invoice_number") if isinstance(case.get("debt"), dict) else None,
    }
    terminal = bool(closed)
    main = "closed" if terminal else str(case.get("status") or case.get("state") or "unknown")
    return StatusDocument(main, terminal, fields, raw)


def _created(case: dict[str, Any]) -> datetime:
    return parse_time(case.get("_created")) or datetime.min.replace(tzinfo=UTC)


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None
