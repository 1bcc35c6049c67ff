"""Requests and checks for Amili Norway's fake Debt.Collection API (items, cases, batches and the invoice list)."""

from __future__ import annotations

from typing import Any

import requests

from simulator import Simulator
from tests.sim.common import COLLECTION_CLIENT, TIMEOUT

ORG = "497f6eca-6276-4993-bfeb-53cbbbba6f08"
OTHER_ORG = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
TTL = 120


#: Seed 001's invoice fields, in its order.
INVOICE_FIELDS = [
    "id", "organization", "invoiceNumber", "collectionCaseNumber", "type", "status", "createdAt", "closedAt",
    "originalInvoiceAmount", "currency", "invoiceDate", "dueDate", "ocrReferenceNumber", "uniqueSourceInvoiceId",
    "currentAmount", "paidAmount", "claims", "debtors",
]  # fmt: skip
DEBTOR_FIELDS = [
    "type", "firstname", "lastname", "name", "customerNumber", "identificationNumber", "organizationNumber",
    "dateOfBirth", "emails", "phoneNumbers", "addresses",
]  # fmt: skip
CASE_FIELDS = [
    "id", "caseNumber", "organizationId", "status", "type", "createdAt", "closedAt", "originalAmount",
    "currentAmount", "paidAmount", "currency", "invoiceNumber", "uniqueSourceInvoiceId", "customerNumber",
]  # fmt: skip


def post_token(sim: Simulator, form: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    data = {"grant_type": "client_credentials", **COLLECTION_CLIENT} if form is None else form
    return requests.post(f"{sim.url}/token", data=data, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)


def api_get(
    sim: Simulator, path: str, headers: dict[str, str], params: dict[str, Any] | None = None, timeout: float = TIMEOUT
) -> requests.Response:
    return requests.get(f"{sim.url}{path}", headers=headers, params=params, timeout=timeout)


def get_invoice(
    sim: Simulator, invoice_id: str, headers: dict[str, str], org: str = ORG, timeout: float = TIMEOUT
) -> requests.Response:
    return api_get(sim, f"/orgs/{org}/invoices/{invoice_id}", headers, timeout=timeout)


def invoice_data(sim: Simulator, invoice_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = get_invoice(sim, invoice_id, headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["summary", "data"] and body["summary"] == {"status": "SUCCESS"}
    data: dict[str, Any] = body["data"]
    return data


def list_cases(sim: Simulator, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = api_get(sim, f"/orgs/{ORG}/cases", headers, params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def get_batch(sim: Simulator, batch_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = api_get(sim, f"/orgs/{ORG}/batches/{batch_id}", headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def assert_amili_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["summary"] == {"status": "ERROR"}
    assert len(body["errors"]) == 1 and body["errors"][0]["code"] == code
    assert isinstance(body["errors"][0]["message"], str) and body["errors"][0]["message"]


LIST = f"/orgs/{ORG}/invoices"


def list_page(sim: Simulator, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    """One page of the list, checked to have the documented envelope."""
    response = api_get(sim, LIST, headers, params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert list(body) == ["summary", "data"]
    assert list(body["summary"]) == ["status", "nextPageToken"] and body["summary"]["status"] == "SUCCESS"
    assert isinstance(body["data"], list)
    return body


def all_pages(sim: Simulator, headers: dict[str, str], **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of one listing, following nextPageToken until it is null."""
    pages: list[list[dict[str, Any]]] = []
    token = None
    while True:
        body = list_page(sim, headers, **params, **({} if token is None else {"PageToken": token}))
        pages.append(body["data"])
        token = body["summary"]["nextPageToken"]
        if token is None:
            return pages
        assert isinstance(token, str) and token
        assert len(pages) < 50, "nextPageToken never ran out"


def ids(sim: Simulator, headers: dict[str, str], **params: Any) -> list[str]:
    return [invoice["id"] for page in all_pages(sim, headers, **params) for invoice in page]


def single(sim: Simulator, invoice_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = api_get(sim, f"/orgs/{ORG}/invoices/{invoice_id}", headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def assert_bad_request(response: requests.Response, parameter: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["summary"] == {"status": "ERROR"}
    assert len(body["errors"]) == 1 and body["errors"][0]["code"] == "BadRequest"
    assert parameter in body["errors"][0]["message"]


def next_stage(sim: Simulator, stages: int = 1) -> None:
    sim.clock.advance(sim.config.stage_seconds * stages)
