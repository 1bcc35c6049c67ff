"""The provider documents bench/store.py loads, and the data of its events.

The provider accounts the items are spread over, and for each account the document of every step of
its flow (the normalized fields, the snapshot's raw body and the event data, as the poller's adapters
and worker.policy write them), made once as text templates for the rows of bench/store_data.py.
"""

from __future__ import annotations

from typing import Any

from worker.diff import diff_fields
from worker.documents import dumps_strict
from worker.domain import ItemRef
from worker.policy import event_data
from worker.providers.billit import ORDER_STATUS

#: Provider accounts: (provider, account, kind, share of the items in twentieths).
ACCOUNTS = (("billit", "default", "order", 8), ("billit", "acme", "order", 3),
            ("amili_distribution", "default", "invoice_number", 4), ("amili_collection", "default", "invoice", 3),
            ("amili_ada", "default", "case", 2))
SLOTS = bytes(n for n, account in enumerate(ACCOUNTS) for _ in range(account[3]))
BILLIT_FLOW = ("ToSend", "Sent", "ToPay", "Delivered")
AMILI_FLOW = ("open", "reminded", "in_collection", "payment_plan")
#: Event types the second subscription asks for (the alerts).
ALERTS = ("poll.failing", "poll.recovered")


def fields_of(acct: int, step: int, terminal: bool = False) -> dict[str, Any]:
    """The normalized fields of a document at ``step`` of its account's flow."""
    if ACCOUNTS[acct][0] == "billit":
        status = "Paid" if terminal else BILLIT_FLOW[step]
        delivery = {
            "is_delivered": step >= 2 or terminal, "status": "Delivered" if step >= 2 else "Sent",
            "date": "2026-01-04T10:22:00", "info": "Peppol", "refused_date": None,
            "refused_reason": None, "refused_info": None}
        messages = [{"description": "Invoice delivered", "file_id": "f-7002",
                     "creation_date": "2026-01-05T08:02:00", "transport_type": "Peppol",
                     "success": True, "trials": 1, "destination": "0208:0123456789", "direction": "Outgoing"}
                    ] if terminal else []
        return {"order_status": status, "delivery": delivery, "messages": messages}
    status = "paid" if terminal else AMILI_FLOW[step]
    return {"status": status, "amount": "1250.00", "open_amount": "0.00" if terminal else "1250.00",
            "currency": "EUR", "due_date": "2026-02-01", "reminder_level": step, "last_action": f"{status}_at"}


def status_of(acct: int, step: int, terminal: bool = False) -> str:
    """The snake_case status the adapters report."""
    if ACCOUNTS[acct][0] == "billit":
        return ORDER_STATUS["Paid" if terminal else BILLIT_FLOW[step]]
    return "paid" if terminal else AMILI_FLOW[step]


def raw_of(acct: int, step: int, terminal: bool = False) -> str:
    """A provider body as the snapshot keeps it, with ``@REF@`` where the ref goes."""
    fields = fields_of(acct, step, terminal)
    if ACCOUNTS[acct][0] == "billit":
        body: dict[str, Any] = {
            "OrderID": "@REF@", "OrderNumber": "INV-2026-@REF@", "OrderType": "Invoice",
            "OrderDirection": "Income", "OrderStatus": fields["order_status"], "TotalIncl": 1512.5,
            "TotalExcl": 1250.0, "Currency": "EUR", "OrderDate": "2026-01-02", "ExpiryDate": "2026-02-01",
            "Customer": {"Name": "Example Customer BV", "VATNumber": "BE0123456789", "PartyID": 4242},
            "CurrentDocumentDeliveryDetails": None, "Messages": []}
    else:
        body = {"_id": "@REF@", "status": fields["status"], "debt": {"invoice_number": "@REF@", "amount": 1250.0,
                                                                    "currency": "EUR", "due_date": "2026-02-01"},
                "debtor": {"name": "Example Debtor", "country": "BE"}, "history": [fields["last_action"]]}
    return dumps_strict(body)


def event_template(acct: int, etype: str, step: int) -> str:
    """The ``data`` of an event as the poller writes it (worker.policy.event_data), with ``%d``,
    ``%s``, ``%s``, ``%s`` where the item id, ref, labels and external id go."""
    provider, account, kind, _ = ACCOUNTS[acct]
    item = ItemRef(-7777777, provider, account, kind, "@REF@", labels={"@": "@"}, external_id="@EXT@")
    fields, before = fields_of(acct, step), fields_of(acct, (step - 1) % len(BILLIT_FLOW))
    status, previous = status_of(acct, step), status_of(acct, (step - 1) % len(BILLIT_FLOW))
    if etype == "status.observed":
        data = event_data(item, status=status, snapshot=fields)
    elif etype == "status.changed":
        data = event_data(item, status=status, previous_status=previous, changes=diff_fields(before, fields),
                          snapshot=fields)
    elif etype == "poll.failing":
        data = event_data(item, status=status, snapshot=fields, consecutive_failures=5,
                          error=f"{provider} answered 503 Service Unavailable (retryable)")
    else:
        data = event_data(item, status=status, snapshot=fields, consecutive_failures=5)
    out = dumps_strict(data).replace("%", "%%").replace("-7777777", "%d", 1).replace('"@REF@"', '"%s"', 1)
    return out.replace('{"@":"@"}', "%s", 1).replace('"@EXT@"', "%s", 1)


class Documents:
    """The JSON texts, made once per account, step and type."""

    def __init__(self) -> None:
        steps = range(len(BILLIT_FLOW))
        accts = range(len(ACCOUNTS))
        self.fields = {(a, s, t): dumps_strict(fields_of(a, s, t)) for a in accts for s in steps for t in (False, True)}
        self.raw = {(a, s, t): raw_of(a, s, t) for a in accts for s in steps for t in (False, True)}
        self.events = {(a, e, s): event_template(a, e, s) for a in accts for s in steps
                       for e in ("status.observed", "status.changed", *ALERTS)}
