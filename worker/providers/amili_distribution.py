"""Amili Norway Distribution (Compello) invoice status: ``POST /send/pstatus``.

Docs: "Check invoice status", https://docs.amili.dev/check-invoice-status-3939044e0.
The request body's field names are not documented: they are settings, defaulting to the names
the send call uses (``Identifier``, ``InvoiceNo``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import SecretStr

from worker.domain import ItemRef, StatusDocument
from worker.errors import ProviderResponseInvalid
from worker.providers.base import Fetched, HttpClient, ProviderContext
from worker.providers.common import message_of, obj, optional_obj
from worker.providers.refs import check_ref
from worker.providers.settings import ProviderSettings, secret

NAME = "amili_distribution"

#: Request status, top-level ``Status`` (https://docs.amili.dev/check-invoice-status-3939044e0).
REQUEST_STATUS = {1: "new", 2: "queued", 3: "completed"}
#: Transaction status, ``Transaction.Status`` (the same page).
TRANSACTION_STATUS = {"OK": "ok", "Pending": "awaiting_response", "Failed": "failed", "Handled": "handled"}
#: Transaction statuses that end the invoice's life (when the request is Completed).
FINAL = {"OK", "Failed", "Handled"}
#: Transaction fields -> normalized names: the channel, delivery, log and correlation fields.
TRANSACTION_FIELDS = {
    "Status": "transaction_status", "Channel": "channel", "RequestedChannel": "requested_channel",
    "ActualChannel": "actual_channel", "ChannelStatus": "channel_status",
    "ChannelUpdateTime": "channel_update_time", "DeliveryTime": "delivery_time", "LogText": "log_text",
    "CorrelationStatus": "correlation_status", "TransactionRid": "transaction_rid",
    "InvoiceNumber": "invoice_number",
}


class AmiliDistributionSettings(ProviderSettings):
    """``POLLER_AMILI_DISTRIBUTION__*``."""

    NAME: ClassVar[str] = NAME
    REQUIRED: ClassVar[tuple[str, ...]] = ("base_url",)

    #: No public base URL is documented; required.
    base_url: str = ""
    #: Optional bearer token: pstatus documents no auth, but deployments behind the Partner API
    #: token service need one.
    token: SecretStr | None = None
    #: Body field carrying the invoice identifier (kind ``identifier``).
    identifier_field: str = "Identifier"
    #: Body field carrying the invoice number (kind ``invoice_number``).
    invoice_number_field: str = "InvoiceNo"


class AmiliDistributionProvider:
    """Polls invoice distribution status."""

    name: ClassVar[str] = NAME
    kinds: ClassVar[tuple[str, ...]] = ("identifier", "invoice_number")

    def __init__(self, settings: AmiliDistributionSettings, account: str, ctx: ProviderContext) -> None:
        self.settings, self.account = settings, account
        self.http = HttpClient(NAME, settings.base_url, ctx.http, clock=ctx.clock, describe_error=describe_error)

    def validate_ref(self, kind: str, ref: str) -> str:
        """Any identifier or invoice number of 1 to 200 characters (it travels in the JSON body)."""
        return check_ref(NAME, kind, ref, in_path=False)

    def fetch(self, item: ItemRef, version: str | None) -> Fetched:
        """``POST /send/pstatus`` with ``{"<field>": ref}``."""
        self.settings.require(self.account, "base_url")
        field = (self.settings.identifier_field if item.kind == "identifier"
                 else self.settings.invoice_number_field)
        headers = {"Accept": "application/json"}
        if self.settings.token:
            headers["Authorization"] = f"Bearer {secret(self.settings.token)}"
        _, body = self.http.request_json("POST", "/send/pstatus", json_body={field: item.ref}, headers=headers)
        return Fetched(body)

    def normalize(self, raw: Any, item: ItemRef) -> StatusDocument:
        """See :func:`normalize`."""
        return normalize(raw)


def describe_error(body: Any) -> str | None:
    """Compello errors are ``{"Message": ...}`` (ASP.NET style)."""
    return message_of(body, "Message", "message", "error")


def normalize(raw: Any) -> StatusDocument:
    """Normalize a pstatus body.

    Status: ``new`` / ``queued`` until the request is Completed, then the transaction's
    (``ok``, ``awaiting_response``, ``failed``, ``handled``). Terminal when ``Status`` is 3 and the
    transaction status is OK, Failed or Handled; ``Pending`` keeps polling even at 3.

    Raises:
        ProviderResponseInvalid: no ``Status``, or it is not 1, 2 or 3 (as a number or digits).
    """
    body = obj(raw, "pstatus body", NAME)
    status = body.get("Status")
    if isinstance(status, str) and status.strip().isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int):
        raise ProviderResponseInvalid(f"pstatus body has no numeric Status (got {status!r})", provider=NAME)
    tx = optional_obj(body.get("Transaction"), "Transaction", NAME) or {}
    fields: dict[str, Any] = {"request_status": status}
    fields.update({ours: tx.get(theirs) for theirs, ours in TRANSACTION_FIELDS.items()})
    tx_status = tx.get("Status")
    if status == 3 and tx_status is not None:
        main = TRANSACTION_STATUS.get(str(tx_status), "unknown")
    else:
        main = REQUEST_STATUS.get(status, "unknown")
    terminal = status == 3 and str(tx_status) in FINAL
    return StatusDocument(main, terminal, fields, raw)
