"""Billit order status: ``GET /v1/orders/{OrderID}`` with ``ApiKey`` and ``PartyID`` headers.

Docs: "Get Status Info of a Sales Invoice" (https://docs.billit.be/docs/curl),
https://docs.billit.be/docs/types, https://docs.billit.be/docs/header-values; the change list,
https://docs.billit.be/docs/odata; OAuth2, https://docs.billit.be/docs/how-do-i-get-started-with-oauth.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

from pydantic import SecretStr

from worker.credentials import SharedRefresh, Token
from worker.domain import ItemRef, StatusDocument
from worker.errors import ConfigurationError, ItemGone, ProviderResponseInvalid
from worker.providers.auth import CachedToken, token_from_response, with_token
from worker.providers.base import Fetched, HttpClient, ProviderContext
from worker.providers.common import naive_utc
from worker.providers.refs import check_ref, segment
from worker.providers.settings import SweepingSettings, secret
from worker.sweep_marks import Mark, SweepEntry

NAME = "billit"

#: OrderStatus values that end an order's life (https://docs.billit.be/docs/types).
FINAL_ORDER_STATUS = {"Paid": "paid", "Canceled": "canceled", "Credited": "credited"}

#: Every documented OrderStatus, mapped to our snake_case status; anything else is "unknown".
ORDER_STATUS = {
    "Draft": "draft", "ToSend": "to_send", "ToPay": "to_pay", "ToInvoice": "to_invoice",
    "ToDeliver": "to_deliver", "ToDomiciliate": "to_domiciliate", "Sent": "sent",
    "Invoiced": "invoiced", "DeliveryNoteCreated": "delivery_note_created",
    "OrderFormCreated": "order_form_created", "Refused": "refused", "ApprovalNeeded": "approval_needed",
    "Delivered": "delivered", "PaymentFileGenerated": "payment_file_generated", **FINAL_ORDER_STATUS,
}

#: DocumentDeliveryStatus values (https://docs.billit.be/docs/curl).
DELIVERY_STATUS = {"Pending": "pending_delivery", "Delivered": "delivered", "Error": "refused"}

#: Peppol invoice-response (IMR) codes. Billit's DocumentDeliveryInfo text depends on the account's
#: language ("Ontvangen", "Betaald"), so the status comes from the language-independent code that
#: starts each incoming message's Description ("PD: The document has been paid.").
IMR_STATUS = {
    "AB": "received", "IP": "in_process", "UQ": "under_query", "CA": "conditionally_accepted",
    "RE": "rejected", "AP": "accepted", "PD": "paid",
}
_IMR_CODE = re.compile(r"^\s*([A-Z]{2})\s*:")
#: An OrderID: a positive integer, ASCII digits only (str.isdigit() also takes "²" and "١").
_ORDER_ID = re.compile(r"0*[1-9][0-9]{0,17}")

#: Billit's order list (https://docs.billit.be/docs/odata): 120 orders a page, NextPageLink to go on.
LIST_PATH = "/v1/orders"
#: Where Billit keeps the webhooks that push to us (`poller providers webhooks sync billit`).
WEBHOOKS_PATH = "/v1/webhooks"
#: A first sweep (no watermark yet) reads back this far on our clock, written as Billit writes its
#: zone-less times: whichever zone Billit's clock is in, a day covers it.
FIRST_SWEEP_LOOKBACK = timedelta(days=1)
#: Each sweep reads this far back past its watermark: Billit stamps LastModified when its write
#: begins, so a change stamped just before the watermark may show only after a sweep read past it.
SWEEP_OVERLAP = timedelta(seconds=5)
#: A NextPageLink chain longer than this is a provider fault, not a list (120 x 10,000 orders).
MAX_PAGES = 10_000

#: CurrentDocumentDeliveryDetails keys -> normalized names (all documented fields).
DELIVERY_FIELDS = {
    "IsDocumentDelivered": "is_delivered", "DocumentDeliveryStatus": "status",
    "DocumentDeliveryDate": "date", "DocumentDeliveryInfo": "info",
    "DocumentRefusedDate": "refused_date", "DocumentRefusedReasonTC": "refused_reason",
    "DocumentRefusedInfo": "refused_info",
}

#: Messages[] keys -> normalized names.
MESSAGE_FIELDS = {
    "Description": "description", "FileID": "file_id", "CreationDate": "creation_date",
    "TransportType": "transport_type", "Success": "success", "Trials": "trials",
    "Destination": "destination", "MessageDirection": "direction",
}


#: What a list entry must carry to be read as the order's own call reads it.
LISTED_KEYS = ("OrderStatus", "CurrentDocumentDeliveryDetails", "Messages")


class BillitSettings(SweepingSettings):
    """``POLLER_BILLIT__*``: ApiKey, or OAuth2 with a rotating refresh token."""

    NAME: ClassVar[str] = NAME
    REQUIRED: ClassVar[tuple[str, ...]] = ("party_id", "api_key | client_id + client_secret + refresh_token")

    base_url: str = "https://api.billit.be"
    party_id: str | None = None
    #: ApiKey auth ("only allowed for non-commercial integrations", Billit's docs).
    api_key: SecretStr | None = None
    #: OAuth2 (Authorization Code flow): the app's client and the refresh token the operator got
    #: from the one-time authorization. The token rotates on every refresh; the current one is kept
    #: in the database, and this setting only seeds it (set a new one to replace it).
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    #: Where OAuth2 tokens are refreshed, relative to base_url.
    token_path: str = "/OAuth2/token"
    #: The secret of a webhook registered by hand (POST /v1/webhooks) to POLLER_PUBLIC_URL's
    #: /ingress/billit/<account>: pushes must carry its Billit-Signature.
    webhook_secret: SecretStr | None = None

    def uses_oauth(self) -> bool:
        """OAuth2 when a refresh token is configured and no ApiKey is."""
        return self.api_key is None and self.refresh_token is not None


def describe_error(body: Any) -> str | None:
    """Billit error bodies are ``{"errors": [{"Code": ..., "Description": ...}]}``."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return None
    parts = []
    for err in body["errors"]:
        if isinstance(err, dict):
            code, desc = err.get("Code"), err.get("Description") or err.get("Message")
            parts.append(f"{code}: {desc}" if code and desc else str(code or desc))
    return "; ".join(p for p in parts if p and p != "None") or None


class BillitProvider:
    """Polls Billit orders."""

    name: ClassVar[str] = NAME
    kinds: ClassVar[tuple[str, ...]] = ("order",)
    overlap: ClassVar[timedelta] = SWEEP_OVERLAP

    def __init__(self, settings: BillitSettings, account: str, ctx: ProviderContext) -> None:
        self.settings, self.account = settings, account
        self.http = HttpClient(NAME, settings.base_url, ctx.http, clock=ctx.clock, describe_error=describe_error)
        self.tokens: CachedToken | None = None
        self.refresher: SharedRefresh | None = None
        if settings.uses_oauth() and ctx.credentials is not None:
            self.refresher = SharedRefresh(ctx.credentials, f"{NAME}:{account}", secret(settings.refresh_token),
                                           self._refresh, ctx.clock)
            self.tokens = CachedToken(self.refresher.token, ctx.clock)
        self.clock = ctx.clock

    def validate_ref(self, kind: str, ref: str) -> str:
        """An OrderID is a positive integer."""
        return str(int(check_ref(NAME, kind, ref, in_path=True, pattern=_ORDER_ID, expected="a numeric OrderID")))

    def fetch(self, item: ItemRef, version: str | None) -> Fetched:
        """``GET /v1/orders/{OrderID}`` with ``ApiKey`` or a bearer token, and ``PartyID``."""
        body = self._get(f"/v1/orders/{segment(NAME, item.kind, item.ref)}")
        # LastModified is the order's version: a sweep that lists the order at the version already
        # read leaves it alone (worker.store.items.claim_named).
        modified = body.get("LastModified") if isinstance(body, dict) else None
        return Fetched(body, version=modified if isinstance(modified, str) else None)

    def sweep(self, mark: Mark, now: datetime) -> Iterator[list[SweepEntry]]:
        """Billit's change list from ``mark``, one list of entries per page:
        ``GET /v1/orders?$filter=LastModified ge DateTime'<watermark - 5 s>'&$orderby=LastModified asc``,
        then each NextPageLink (on Billit's own host only: it carries our credentials).

        Raises:
            ProviderError: a page failed (the caller keeps its watermark), or a page is not a list.
        """
        since = billit_time(now - FIRST_SWEEP_LOOKBACK if mark.key is None else mark.key - SWEEP_OVERLAP)
        query = urlencode({"$filter": f"LastModified ge DateTime'{since}'", "$orderby": "LastModified asc"},
                          quote_via=quote)
        path: str | None = f"{LIST_PATH}?{query}"
        pages = 0
        while path is not None:
            if pages == MAX_PAGES:
                raise _invalid(f"the order list went on past {MAX_PAGES} pages")
            body = self._get(path)
            pages += 1
            yield list_entries(body)
            path = self._next_page(body)

    def listed_document(self, entry: SweepEntry) -> StatusDocument | None:
        """An order of the change list as its own call would read it, or None when the entry does
        not carry what that call does (OrderStatus, CurrentDocumentDeliveryDetails and Messages,
        each at least as a key): the sweep then polls the order (worker.listed decides whether a
        listed order is believed)."""
        if any(key not in entry.attrs for key in LISTED_KEYS):
            return None
        try:
            return replace(normalize(dict(entry.attrs), ref=entry.ref), version=entry.modified)
        except ProviderResponseInvalid:
            return None

    def parse_modified(self, text: str) -> datetime:
        """See :func:`parse_billit_time`."""
        return parse_billit_time(text)

    def webhooks(self) -> list[dict[str, Any]]:
        """``GET /v1/webhooks``: the account's webhooks (https://docs.billit.be/docs/get-and-delete)."""
        body = self._get(WEBHOOKS_PATH)
        listed = body.get("Items") if isinstance(body, dict) else body
        if not isinstance(listed, list) or not all(isinstance(h, dict) for h in listed):
            raise _invalid("GET /v1/webhooks did not answer a list of webhooks")
        return listed

    def add_webhook(self, entity_type: str, update_type: str, url: str) -> dict[str, Any]:
        """``POST /v1/webhooks``; Billit answers the webhook with its ``WebhookID`` and ``Secret``."""
        hook = self._call("POST", WEBHOOKS_PATH, json_body={"EntityType": entity_type,
                                                            "EntityUpdateType": update_type, "WebhookURL": url})
        if not isinstance(hook, dict) or hook.get("WebhookID") in (None, "") or not hook.get("Secret"):
            raise _invalid("POST /v1/webhooks did not answer a WebhookID and a Secret")
        return hook

    def delete_webhook(self, remote_id: str) -> bool:
        """``DELETE /v1/webhooks/{id}``; False when Billit no longer has it."""
        try:
            self._call("DELETE", f"{WEBHOOKS_PATH}/{quote(remote_id, safe='')}", allow_empty=True)
        except ItemGone:
            return False
        return True

    def _get(self, path: str) -> Any:
        return self._call("GET", path)

    def _call(self, method: str, path: str, *, json_body: Any = None, allow_empty: bool = False) -> Any:
        self._check_configured()
        if self.tokens is not None:
            def call(token: str) -> Any:
                return self.http.request_json(method, path, json_body=json_body, allow_empty=allow_empty, headers={
                    "Authorization": f"Bearer {token}", "PartyID": str(self.settings.party_id)})[1]
            return with_token(self.tokens, call)
        if self.settings.uses_oauth():
            raise ConfigurationError("billit OAuth2 needs the database credential store (internal wiring error)")
        return self.http.request_json(method, path, json_body=json_body, allow_empty=allow_empty, headers={
            "ApiKey": secret(self.settings.api_key), "PartyID": str(self.settings.party_id)})[1]

    def _next_page(self, body: dict[str, Any]) -> str | None:
        link = body.get("NextPageLink")
        if link in (None, ""):
            return None
        if not isinstance(link, str):
            raise _invalid("NextPageLink is not a string")
        base, url = urlsplit(self.settings.base_url), urlsplit(link)
        if (url.scheme or url.netloc) and (url.scheme, url.netloc) != (base.scheme, base.netloc):
            raise _invalid(f"NextPageLink leads to another host ({url.scheme}://{url.netloc}), "
                           f"not {base.scheme}://{base.netloc}")
        prefix = base.path.rstrip("/")
        path = url.path[len(prefix):] if prefix and url.path.startswith(prefix + "/") else url.path
        return f"{path}?{url.query}" if url.query else path

    def _check_configured(self) -> None:
        env = BillitSettings.env_name
        missing = []
        if not self.settings.party_id:
            missing.append(env("party_id", self.account))
        if not self.settings.api_key and not self.settings.refresh_token:
            missing.append(f"{env('api_key', self.account)} (or, for OAuth2, {env('client_id', self.account)}, "
                           f"{env('client_secret', self.account)} and {env('refresh_token', self.account)})")
        if missing:
            raise ConfigurationError(f"billit account {self.account!r} is not configured: set {' and '.join(missing)}")

    def _refresh(self, refresh_token: str) -> tuple[Token, str]:
        """Spend the refresh token: ``POST /OAuth2/token`` (JSON), returns the access and next refresh token."""
        self.settings.require(self.account, "client_id", "client_secret")
        try:
            _, body = self.http.request_json("POST", self.settings.token_path, not_found_is_gone=False, json_body={
                "grant_type": "refresh_token", "client_id": self.settings.client_id,
                "client_secret": secret(self.settings.client_secret), "refresh_token": refresh_token})
        except ProviderResponseInvalid as err:
            if err.status_code in (400, 401):
                raise ConfigurationError(
                    f"billit refused the stored refresh token ({err.message}); authorize again and set "
                    f"{BillitSettings.env_name('refresh_token', self.account)} to the new refresh token") from err
            raise
        token = token_from_response(body, now=self.clock(), provider=NAME)
        new_refresh = body.get("refresh_token") if isinstance(body, dict) else None
        if not isinstance(new_refresh, str) or not new_refresh:
            raise ProviderResponseInvalid("billit token response has no refresh_token", provider=NAME)
        return token, new_refresh

    def normalize(self, raw: Any, item: ItemRef) -> StatusDocument:
        """See :func:`normalize`."""
        return normalize(raw, ref=item.ref)


def normalize(raw: Any, *, ref: str | None = None) -> StatusDocument:
    """Normalize a Billit order body to the fields that carry its status.

    Fields: ``order_status`` (verbatim), ``delivery`` (every CurrentDocumentDeliveryDetails field,
    or None before sending) and ``messages`` (sorted by creation date, so a reordered list is no
    change). Terminal when OrderStatus is Paid, Canceled or Credited, or a PD ("paid") invoice
    response arrived: after that nothing in the order moves.

    Raises:
        ProviderResponseInvalid: the body is not an order (no OrderID, wrong types, another order).
    """
    if not isinstance(raw, dict):
        raise _invalid(f"order body is a JSON {type(raw).__name__}, not an object")
    if "OrderID" not in raw:
        raise _invalid("order body has no OrderID")
    if ref is not None and str(raw["OrderID"]) != str(ref):
        raise _invalid(f"asked for order {ref} but the body is order {raw['OrderID']!r}")
    order_status = raw.get("OrderStatus")
    if order_status is not None and not isinstance(order_status, str):
        raise _invalid(f"OrderStatus is a {type(order_status).__name__}, not a string")

    details = raw.get("CurrentDocumentDeliveryDetails")
    if details is not None and not isinstance(details, dict):
        raise _invalid("CurrentDocumentDeliveryDetails is not an object")
    delivery = {ours: details.get(theirs) for theirs, ours in DELIVERY_FIELDS.items()} if details else None

    raw_messages = raw.get("Messages") or []
    if not isinstance(raw_messages, list) or not all(isinstance(m, dict) for m in raw_messages):
        raise _invalid("Messages is not a list of objects")
    messages = [{ours: m.get(theirs) for theirs, ours in MESSAGE_FIELDS.items()} for m in raw_messages]
    messages.sort(key=lambda m: (str(m["creation_date"] or ""), str(m["file_id"] or "")))

    fields = {"order_status": order_status, "delivery": delivery, "messages": messages}
    status, terminal = _status(order_status, delivery, messages)
    return StatusDocument(status=status, terminal=terminal, fields=fields, raw=raw)


def _status(
    order_status: str | None, delivery: dict[str, Any] | None, messages: list[dict[str, Any]]
) -> tuple[str, bool]:
    if order_status in FINAL_ORDER_STATUS:
        return FINAL_ORDER_STATUS[order_status], True
    for message in reversed(messages):
        code = _imr_code(message)
        if code:
            return IMR_STATUS[code], code == "PD"
    if delivery and delivery.get("status") is not None:
        return DELIVERY_STATUS.get(str(delivery["status"]), "unknown"), False
    return ORDER_STATUS.get(order_status or "", "unknown"), False


def _imr_code(message: dict[str, Any]) -> str | None:
    if str(message.get("direction") or "").lower() != "incoming":
        return None
    match = _IMR_CODE.match(str(message.get("description") or ""))
    if match and match.group(1) in IMR_STATUS:
        return match.group(1)
    return None


def billit_time(moment: datetime) -> str:
    """``moment`` as Billit writes times: ``2025-05-07T14:09:17.563``, no zone (UTC taken)."""
    return naive_utc(moment).isoformat(timespec="milliseconds")


def parse_billit_time(text: str) -> datetime:
    """A Billit time (zone-less, 0-7 fraction digits) for ordering; a zoned one is taken to UTC.

    Raises:
        ProviderResponseInvalid: not a time.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise _invalid(f"LastModified {text!r} is not a time") from None
    return naive_utc(moment)


def list_entries(body: Any) -> list[SweepEntry]:
    """The orders of one list page (``{"Items": [...]}``), each with its LastModified.

    Raises:
        ProviderResponseInvalid: the page is not a list of orders each with OrderID and LastModified.
    """
    if not isinstance(body, dict) or not isinstance(body.get("Items"), list):
        raise _invalid("the order list has no Items list")
    entries = []
    for order in body["Items"]:
        if not isinstance(order, dict) or order.get("OrderID") is None:
            raise _invalid("an order in the list has no OrderID")
        modified = order.get("LastModified")
        if not isinstance(modified, str):
            raise _invalid(f"order {order['OrderID']!r} in the list has no LastModified")
        ref = str(order["OrderID"])
        # Tracked refs are canonical (validate_ref): "0042" is order 42.
        ref = str(int(ref)) if _ORDER_ID.fullmatch(ref) else ref
        entries.append(SweepEntry("order", ref, modified, parse_billit_time(modified), attrs=order))
    return entries


def _invalid(message: str) -> ProviderResponseInvalid:
    return ProviderResponseInvalid(message, provider=NAME)
