"""The case bodies of the Amili Sweden (ADA) fake: seed 004's field set at each stage of a case's life.

A body is a pure function of the case and its stage, so polling within a stage returns the same
bytes (and the same ``_etag``). A closed case gets ``state``/``status`` ``"closed"`` and a ``closed``
object ``{"date", "reason": "paid"|"cancelled"}``; clients should key on ``closed``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simulator.eve import rfc1123
from simulator.fake import Bodies, Item

# Last stage of each scenario; after it nothing changes.
SCENARIOS: dict[str, int] = {"paid": 4, "cancelled": 2}

# Seed 004's values, shared by every case of the simulated creditor.
ACCOUNT_ID = "674dbeaf08847b9501cc9132"
CREDITOR_ID = "674dbeb208847b9501cc9138"
CREDITOR_NAME = "Amili Integration Team"
AGREEMENT_VERSION = "6790c2ec38ebf4814061f0b5"
FIRST_INVOICE_NUMBER = 15  # "INV-2025-015", seed 004's example
FIRST_REFERENCE_NUMBER = 49477
CAPITAL = 500
COSTS = 60
PARTIAL_PAYMENT = 250

# (name, id_number, customer_number); seed 004's customer first.
_CUSTOMERS: tuple[tuple[str, str, str], ...] = (
    ("Jane Smith", "556789-1234", "12345"),
    ("Erik Lindqvist", "671123-4581", "12346"),
)

# ObjectId = 4-byte time + 5-byte process id + 3-byte counter. The process and
# counter parts are taken from seed 004's ids so generated ids look like Amili's.
_OBJECT_ID_PARTS: dict[str, tuple[str, int]] = {
    "case": ("93ee14723d", 0x28FA95),
    "invoice": ("7fcb697a78", 0xCB1A32),
    "customer": ("8d8dc95ece", 0x127941),
}

def object_id(moment: datetime, kind: str, seq: int) -> str:
    """A deterministic 24-hex Mongo ObjectId for the ``seq``-th object of ``kind`` made at ``moment``."""
    process, counter = _OBJECT_ID_PARTS[kind]
    seconds = int(moment.replace(tzinfo=UTC).timestamp()) & 0xFFFFFFFF
    return f"{seconds:08x}{process}{(counter + seq) & 0xFFFFFF:06x}"


@dataclass
class Case(Item):
    """A case of the simulated creditor; ``seq`` numbers cases in creation order."""

    case_id: str
    invoice_id: str
    customer_id: str
    invoice_number: str
    seq: int


class CaseBodies(Bodies):
    """Renders cases as ``GET /cases/{id}`` answers them."""

    def render(self, case: Case, stage: int) -> dict[str, Any]:
        """Build the case object for ``case`` at ``stage`` (seed 004's field set plus ``closed``)."""
        stamps = [rfc1123(self.moment(case, k)) for k in range(stage + 1)]
        life = _LIVES[case.scenario]
        state, status = life[stage]

        state_history: list[dict[str, str]] = []
        status_history: list[dict[str, str]] = []
        for k in range(stage + 1):
            if k == 0 or life[k][0] != life[k - 1][0]:
                state_history.append({"state": life[k][0], "state_date": stamps[k]})
            if k == 0 or life[k][1] != life[k - 1][1]:
                status_history.append({"status": life[k][1], "status_date": stamps[k]})

        paid = case.scenario == "paid"
        added_costs = COSTS if paid and stage >= 2 else 0
        remaining_capital, remaining_costs = CAPITAL, added_costs
        transactions = [self._transaction(case, 0, "creditor_system", "capital", "case_registration", CAPITAL)]
        closed: dict[str, str] | None = None
        if paid and stage >= 3:
            remaining_capital = CAPITAL - PARTIAL_PAYMENT
            transactions.append(self._transaction(case, 3, "debtor", "payment", "payment", -PARTIAL_PAYMENT))
        if paid and stage >= 4:
            rest = remaining_capital + remaining_costs
            remaining_capital = remaining_costs = 0
            transactions.append(self._transaction(case, 4, "debtor", "payment", "payment", -rest))
            closed = {"date": stamps[4], "reason": "paid"}
        if case.scenario == "cancelled" and stage >= 2:
            remaining_capital = 0
            transactions.append(
                self._transaction(case, 2, "creditor_system", "capital", "creditor_cancellation", -CAPITAL)
            )
            closed = {"date": stamps[2], "reason": "cancelled"}
        remaining_interest = 0

        name, id_number, customer_number = self._customer(case.seq)
        body: dict[str, Any] = {
            "_id": case.case_id,
            "invoice": case.invoice_id,
            "_created": stamps[0],
            "_etag": "",
            "_updated": stamps[stage],
            "account": ACCOUNT_ID,
            "agreement_version": AGREEMENT_VERSION,
            "case_settings": {"interest_rate": {"reference_rate": True}},
            "closed": closed,
            "creditor": CREDITOR_ID,
            "creditor_name": CREDITOR_NAME,
            "currency": "SEK",
            "customer": case.customer_id,
            "customer_id_number": id_number,
            "customer_name": name,
            "customer_number": customer_number,
            "customer_status": "initialized",
            "debt": {
                "invoice_number": case.invoice_number,
                "invoice_date": stamps[0],
                "invoice_due_days_after_invoice_date": 8,
                "interest_days_after_invoice_date": 8,
                "initial_capital": CAPITAL,
                "capital_to_claim": CAPITAL,
                "debt_description": "Professional consulting services",
                "payout_reference": case.invoice_number,
            },
            "invoice_registration": case.invoice_id,
            "latest_state_date": state_history[-1]["state_date"],
        }
        remaining = {
            "capital": remaining_capital,
            "costs": remaining_costs,
            "interest": remaining_interest,
        }
        # Swedish cases are in SEK, so the local_* amounts equal the total_* ones.
        body.update(_amounts("local", added_costs, remaining))
        body.update(
            {"state": state, "state_history": state_history, "status": status, "status_history": status_history}
        )
        body.update(_amounts("total", added_costs, remaining))
        body["transactions"] = transactions
        body["reference_number"] = str(FIRST_REFERENCE_NUMBER + case.seq)
        # Like Eve, the etag is a hash of the content, so it changes exactly when the case does.
        content = json.dumps({k: v for k, v in body.items() if k != "_etag"}, sort_keys=True).encode()
        body["_etag"] = hashlib.blake2b(content, digest_size=16).hexdigest()
        return body

    def _transaction(self, case: Case, stage: int, origin: str, kind: str, tag: str, amount: int) -> dict[str, Any]:
        moment = self.moment(case, stage)
        return {
            "bank_transaction_date": rfc1123(moment.replace(hour=0, minute=0, second=0, microsecond=0)),
            "registration_date": rfc1123(moment),
            "origin": origin,
            "type": kind,
            "description_locale_tag": f"api.transaction.{tag}",
            "amount": amount,
        }

    @staticmethod
    def _customer(seq: int) -> tuple[str, str, str]:
        if seq < len(_CUSTOMERS):
            return _CUSTOMERS[seq]
        id_number = f"{700101 + seq:06d}-{(1234 + seq * 7) % 10000:04d}"
        return (f"Simulated Customer {seq + 1}", id_number, str(12345 + seq))


def _amounts(prefix: str, added_costs: int, remaining: dict[str, int]) -> dict[str, int]:
    """The eight ``<prefix>_added_*`` / ``<prefix>_remaining_*`` amounts, in seed 004's order."""
    return {
        f"{prefix}_added_capital_amount": CAPITAL,
        f"{prefix}_added_costs_amount": added_costs,
        f"{prefix}_added_interest_amount": 0,
        f"{prefix}_added_transaction_amount": CAPITAL + added_costs,
        f"{prefix}_remaining_capital_amount": remaining["capital"],
        f"{prefix}_remaining_costs_amount": remaining["costs"],
        f"{prefix}_remaining_interest_amount": remaining["interest"],
        f"{prefix}_remaining_transaction_amount": sum(remaining.values()),
    }


# (state, status) at each stage of each scenario.
_LIVES: dict[str, tuple[tuple[str, str], ...]] = {
    "paid": (
        ("initializing", "initializing"),
        ("invoice", "initialized"),
        ("debt_collection", "debt_collection_active"),
        ("debt_collection", "debt_collection_active"),
        ("closed", "closed"),
    ),
    "cancelled": (
        ("initializing", "initializing"),
        ("invoice", "initialized"),
        ("closed", "closed"),
    ),
}
