"""The bodies of Amili Norway's Debt.Collection fake: invoices, their cases and batches at each stage.

Pure functions of an item and its stage (plus the org and API client they belong to), so polling
within a stage returns the same bytes; ``simulator.amili_collection`` serves them one at a time,
``simulator.amili_collection_list`` as a list.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from simulator.clock import SimClock
from simulator.fake import Bodies, Item

CURRENCY = "NOK"
PRINCIPAL = 1000
#: Fee claims in the order the notices add them: reminder fee, then collection fee.
FEES: tuple[tuple[str, int], ...] = (("REMINDER_FEE", 70), ("COLLECTION_FEE", 70))
PARTIAL_PAYMENT = 500


class Step(NamedTuple):
    status: str
    type: str
    fees: int  # how many of FEES have been added as claims
    paid: int | None  # amount paid so far; None = everything owed


#: Each scenario's stages; the last one is final.
INVOICE_LIVES: dict[str, tuple[Step, ...]] = {
    "paid": (
        Step("OPEN", "NOTICE", 0, 0),
        Step("OPEN", "PAYMENT_REMINDER", 1, 0),
        Step("OPEN", "COLLECTION_NOTICE", 2, 0),
        Step("OPEN", "COLLECTION_NOTICE", 2, PARTIAL_PAYMENT),
        Step("CLOSED", "COLLECTION_NOTICE", 2, None),
    ),
    "paused": (
        Step("OPEN", "NOTICE", 0, 0),
        Step("OPEN", "PAYMENT_REMINDER", 1, 0),
        Step("PAUSED", "PAYMENT_REMINDER", 1, 0),
    ),
    "withdrawn": (
        Step("OPEN", "NOTICE", 0, 0),
        Step("WITHDRAWN", "NOTICE", 0, 0),
    ),
}
CLOSED_STATUSES = frozenset({"CLOSED", "WITHDRAWN"})
#: The old Collection API capitalises words ("Open" in seed 001); AutoCollect uses upper case.
LEGACY_STATUS = {"OPEN": "Open", "CLOSED": "Closed", "PAUSED": "Paused", "WITHDRAWN": "Withdrawn"}

#: Terminal batch status per scenario; stages are QUEUED, PROCESSING, then this.
BATCH_OUTCOMES = {"success": "SUCCESS", "partial": "PARTIAL", "failed": "FAILED"}
BATCH_FINAL_STAGE = 2
BATCH_SIZE = 3
BATCH_ERRORS = (
    ("VALIDATION_ERROR", "debtors[0].addresses[0].zipCode is required"),
    ("VALIDATION_ERROR", "dueDate must not be before invoiceDate"),
    ("DUPLICATE", "uniqueSourceInvoiceId is already used by another invoice"),
)

DEBTORS = (("Ola", "Nordmann"), ("Kari", "Nordmann"), ("Per", "Hansen"), ("Ingrid", "Olsen"))

ID_NAMESPACE = uuid.UUID("3b8f2d4e-9a61-5c07-8e2f-71d4a6c9b0e3")
#: What a caller-chosen invoice or batch id may look like.
CUSTOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def amili_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z and whole seconds, like seed 001 (``2019-08-24T14:15:22Z``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def kid_mod10(digits: str) -> str:
    """Append the MOD10 (Luhn) check digit Norwegian KID/OCR references carry (Collection and Distribution)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return digits + str((10 - total % 10) % 10)


def claims_for(step: Step) -> list[dict[str, Any]]:
    """The claims of an invoice at ``step``; payments cover fees before the principal."""
    parts = [("PRINCIPAL", PRINCIPAL), *FEES[: step.fees]]
    left = sum(amount for _, amount in parts) if step.paid is None else step.paid
    paid: dict[str, int] = {}
    # Norwegian order of coverage: costs first, the principal last.
    for kind, amount in reversed(parts):
        paid[kind] = min(amount, left)
        left -= paid[kind]
    return [
        {
            "type": kind,
            "originalAmount": amount,
            "currentAmount": amount - paid[kind],
            "paidAmount": paid[kind],
            "currency": CURRENCY,
        }
        for kind, amount in parts
    ]


@dataclass
class Invoice(Item):
    """An invoice and its collection case; ``seq`` numbers invoices and batches together."""

    invoice_id: str
    seq: int
    legacy: bool


@dataclass
class Batch(Item):
    """An INVOICE batch."""

    batch_id: str
    seq: int


class CollectionBodies(Bodies):
    """Renders one org's invoices, cases and batches, as the API client ``client_id`` sees them."""

    def __init__(self, clock: SimClock, stage_seconds: float, org_id: str, client_id: str) -> None:
        super().__init__(clock, stage_seconds)
        self.org_id = org_id
        self.client_id = client_id

    def _stamp(self, item: Invoice | Batch, stage: int) -> str:
        return amili_timestamp(self.moment(item, stage))

    def debtor_name(self, invoice: Invoice) -> str:
        first, last = DEBTORS[(invoice.seq - 1) % len(DEBTORS)]
        return f"{first} {last}"

    def _customer_number(self, invoice: Invoice) -> str:
        # Seed 003 uses customer number 543210; number ours from there.
        return str(543209 + invoice.seq)

    def invoice(self, invoice: Invoice, stage: int) -> dict[str, Any]:
        """Build the invoice ``data`` object, with exactly seed 001's fields, at ``stage``."""
        life = INVOICE_LIVES[invoice.scenario]
        step = life[stage]
        claims = claims_for(step)
        closed_at = None
        if step.status in CLOSED_STATUSES:
            first_closed = next(k for k, s in enumerate(life) if s.status in CLOSED_STATUSES)
            closed_at = self._stamp(invoice, first_closed)
        created = self.clock.wall(invoice.born)
        invoice_date = created.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
        first, last = DEBTORS[(invoice.seq - 1) % len(DEBTORS)]
        seq = invoice.seq
        birth_year, birth_day = 1970 + seq % 30, seq % 28 + 1
        return {
            "id": invoice.invoice_id,
            "organization": {
                "id": self.org_id,
                "organizationNumber": "999888777",
                "name": "Simulert Kreditor AS",
            },
            "invoiceNumber": str(100000 + seq),
            "collectionCaseNumber": str(7000000 + seq),
            "type": step.type,
            "status": LEGACY_STATUS[step.status] if invoice.legacy else step.status,
            "createdAt": amili_timestamp(created),
            "closedAt": closed_at,
            "originalInvoiceAmount": PRINCIPAL,
            "currency": CURRENCY,
            "invoiceDate": amili_timestamp(invoice_date),
            "dueDate": amili_timestamp(invoice_date + timedelta(days=14)),
            "ocrReferenceNumber": kid_mod10(f"{self._customer_number(invoice)}{100000 + seq}"),
            "uniqueSourceInvoiceId": f"sim-src-{seq:05d}",
            "currentAmount": sum(c["currentAmount"] for c in claims),
            "paidAmount": sum(c["paidAmount"] for c in claims),
            "claims": claims,
            "debtors": [
                {
                    "type": "Private",
                    "firstname": first,
                    "lastname": last,
                    "name": f"{first} {last}",
                    "customerNumber": self._customer_number(invoice),
                    # Shaped like a Norwegian national id (DDMMYY + 5 digits), not a valid one.
                    "identificationNumber": f"{birth_day:02d}01{birth_year % 100:02d}{seq * 7919 % 100000:05d}",
                    "organizationNumber": None,
                    "dateOfBirth": f"{birth_year}-01-{birth_day:02d}",
                    "emails": [{"value": f"{first.lower()}.{last.lower()}@example.no"}],
                    "phoneNumbers": [],
                    "addresses": [
                        {"street": f"Storgata {seq}", "city": "Oslo", "zipCode": "0155", "countryCode": "NO"}
                    ],
                }
            ],
        }

    def case(self, invoice: Invoice, stage: int) -> dict[str, Any]:
        """The collection-case view of an invoice at ``stage``: same life, case fields."""
        body = self.invoice(invoice, stage)
        return {
            "id": str(uuid.uuid5(ID_NAMESPACE, f"case/{invoice.invoice_id}")),
            "caseNumber": body["collectionCaseNumber"],
            "organizationId": self.org_id,
            "status": body["status"],
            "type": body["type"],
            "createdAt": body["createdAt"],
            "closedAt": body["closedAt"],
            "originalAmount": body["originalInvoiceAmount"],
            "currentAmount": body["currentAmount"],
            "paidAmount": body["paidAmount"],
            "currency": body["currency"],
            "invoiceNumber": body["invoiceNumber"],
            "uniqueSourceInvoiceId": body["uniqueSourceInvoiceId"],
            "customerNumber": self._customer_number(invoice),
        }

    def batch(self, batch: Batch, stage: int) -> dict[str, Any]:
        """Build the batch ``data`` object at ``stage`` (QUEUED, PROCESSING, terminal)."""
        succeeded: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        if stage >= BATCH_FINAL_STAGE:
            status = BATCH_OUTCOMES[batch.scenario]
            failing = {"success": 0, "partial": 1, "failed": BATCH_SIZE}[batch.scenario]
            for k in range(BATCH_SIZE):
                if k >= BATCH_SIZE - failing:
                    code, message = BATCH_ERRORS[k % len(BATCH_ERRORS)]
                    failed.append(
                        {"reference": f"sim-batch-{batch.seq}-{k + 1}", "errors": [{"code": code, "message": message}]}
                    )
                else:
                    # Entry fields as in the GetBatchById example (invoiceId, invoiceNumber, caseId).
                    succeeded.append(
                        {
                            "invoiceId": str(uuid.uuid5(ID_NAMESPACE, f"batch/{batch.batch_id}/invoice/{k}")),
                            "invoiceNumber": f"B{batch.seq:04d}-{k + 1}",
                            "caseId": str(uuid.uuid5(ID_NAMESPACE, f"batch/{batch.batch_id}/case/{k}")),
                        }
                    )
        else:
            status = "QUEUED" if stage == 0 else "PROCESSING"
        return {
            "batchId": batch.batch_id,
            "type": "INVOICE",
            "status": status,
            "createdAt": self._stamp(batch, 0),
            "finishedAt": self._stamp(batch, BATCH_FINAL_STAGE) if stage >= BATCH_FINAL_STAGE else None,
            "organizationId": self.org_id,
            # The docs show a GUID here: the API client that posted the batch.
            "createdBy": str(uuid.uuid5(ID_NAMESPACE, f"client/{self.client_id}")),
            "succeeded": succeeded,
            "failed": failed,
        }
