"""Fake of Amili ARM's ``GET /clients/{clientno}/batches/{batchuuid}`` (PROVIDERS.md section 3).

A batch of documents posted to ``/clients/{clientno}/documents/batches`` is processed
asynchronously; this fake serves the status call. The HTTP status carries the state, as the
docs list it: 202 Accepted while processing, then 200 OK (all documents processed) or
206 Partial Content (finished with failures). The body schema is not documented, so it
follows the project's decision; result entries reuse the single-document answer of seed 003.

Auth is a JWT Bearer: tokens from the shared client-credentials ``POST /token`` (see
``simulator.identity``), or a long-lived static token some deployments are issued.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulator.config import SimulatorConfig
from simulator.fake import AdminItems, Item
from simulator.identity import TokenClientFake, bearer_token, challenge
from simulator.router import HttpError, Request, Response, Router, json_response

NAME = "amili_arm"
DEFAULT_CLIENT_ID = "sim-arm-client"
DEFAULT_CLIENT_SECRET = "sim-arm-secret"
DEFAULT_STATIC_TOKEN = "sim-arm-static-token"
DEFAULT_CLIENT_NO = "10001"
RESOURCE = "https://api.amili.no/arm"

#: Scenario -> (final batch status, HTTP status once finished).
OUTCOMES: dict[str, tuple[str, int]] = {"ok": ("PROCESSED", 200), "partial": ("PARTIALLY_PROCESSED", 206)}
FINAL_STAGE = 2
MAX_DOCUMENTS = 1000
#: Seed 003's example documentNo; a batch's documents are numbered from here.
FIRST_DOCUMENT_NO = 88776655
#: Seed 003's warning, tidied: ARM sanitises addresses and says so.
SANITIZED_WARNING = {
    "field": "EmailAddressDocument",
    "message": "Email address ola.nordmann@ example.no was sanitized: ola.nordmann@example.no",
}

_ID_NAMESPACE = uuid.UUID("9d2c61f0-47b3-5e8a-a1c4-0e6b3f7d2a58")
_CUSTOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_JSON_RANGES = frozenset({"*/*", "application/*", "application/json"})


def arm_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z and whole seconds (the Debt.Collection docs' style)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """ARM's error body ``{"status": "ERROR", "message": ...}`` with the given HTTP status."""
    return json_response(status, {"status": "ERROR", "message": message}, headers)


def accepts_json(accept: str | None) -> bool:
    """True when an ``Accept`` header (absent = anything) admits application/json."""
    if accept is None or not accept.strip():
        return True
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        refused = any(p.replace(" ", "").lower() in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
        if refused:
            continue
        if media in _JSON_RANGES or (media.startswith("application/") and media.endswith("+json")):
            return True
    return False


@dataclass
class _Batch(Item):
    batch_uuid: str
    seq: int
    documents: int


class FakeAmiliArm(TokenClientFake[_Batch]):
    """The fake ARM batch-status API plus its Python and admin controls."""

    name = NAME
    noun = "batch"
    id_field = "batchUuid"
    described = {"batches": ("id", "documents", "http_status", "status")}
    resource = RESOURCE
    default_client = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    fault_errors = {
        401: ("The access token is not valid",),
        404: ("Batch not found",),
        429: ("Too many requests, retry later",),
    }

    def _configure(self, config: SimulatorConfig) -> None:
        super()._configure(config)
        #: Never expires and survives ``expire_tokens``; "" turns it off.
        self.static_token = str(self.options.get("amili_arm_static_token", DEFAULT_STATIC_TOKEN))
        self.client_no = str(self.options.get("amili_arm_client_no", DEFAULT_CLIENT_NO))
        self._batches: dict[str, _Batch] = {}
        self._seq = 0
        for index in range(self._seed("amili_arm_seed")):
            # Alternate so the demo shows both a clean and a partial batch.
            self.create_batch(scenario="ok" if index % 2 == 0 else "partial")

    def error(self, status: int, *args: Any) -> Response:
        """ARM's ``{"status": "ERROR", "message": ...}``."""
        return error_response(status, *args)

    # ---- Python API -------------------------------------------------------------

    def create_batch(self, batch_uuid: str | None = None, scenario: str = "ok", documents: int = 3) -> str:
        """Create a batch of ``documents`` documents, processing from now; return its batchUuid."""
        self._check_scenario(scenario, OUTCOMES)
        if not isinstance(documents, int) or isinstance(documents, bool) or not 1 <= documents <= MAX_DOCUMENTS:
            raise ValueError(f"documents must be an integer 1..{MAX_DOCUMENTS}, got {documents!r}")
        if scenario == "partial" and documents < 2:
            raise ValueError("a partial batch needs at least 2 documents (some processed, some failed)")
        born = self.clock.now()
        with self._lock:
            seq = self._seq + 1
            if batch_uuid is None:
                batch_uuid = str(uuid.uuid5(_ID_NAMESPACE, f"batch/{seq}"))
            elif not isinstance(batch_uuid, str) or not _CUSTOM_ID.match(batch_uuid):
                raise ValueError(f"batchUuid must be 1-64 letters, digits, '.', '_' or '-', got {batch_uuid!r}")
            elif batch_uuid.lower() in self._batches:
                raise ValueError(f"batch {batch_uuid} already exists")
            self._seq = seq
            self._batches[batch_uuid.lower()] = _Batch(scenario, born, batch_uuid, seq, documents)
        return batch_uuid

    def batches(self) -> list[dict[str, Any]]:
        """List batches as ``{"id", "scenario", "documents", "stage", "final_stage", "status", "http_status"}``."""
        result = []
        for batch, stage in self._staged(lambda: sorted(self._batches.values(), key=lambda b: b.seq)):
            http_status, body = self._render(batch, stage)
            ids = {"id": batch.batch_uuid}
            fields = {"documents": batch.documents, "status": body["status"], "http_status": http_status}
            result.append(self._entry(ids, batch, stage, **fields))
        return result

    def batch_body(self, batch_uuid: str) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, body)`` exactly as ``GET .../batches/{uuid}`` would answer now."""
        batch = self._get(batch_uuid)
        return self._render(batch, self._stage(batch))

    # ---- server hooks -----------------------------------------------------------

    def _register_api(self, router: Router) -> None:
        router.add("GET", "/clients/{client_no}/batches/{batch_uuid}", self._http_get_batch, label=NAME)

    def _admin_items(self) -> AdminItems:
        return {"batches": (self.batches, self._admin_create)}

    def _describe_header(self) -> list[str]:
        return [
            f"Amili ARM, client {self.client_no} ({self.stage_seconds:g} sim-seconds per stage):",
            self._token_line() + (" or the static bearer token" if self.static_token else ""),
        ]

    def env(self, base_url: str) -> dict[str, str]:
        """The token client's settings and the client number."""
        return {**super().env(base_url), "POLLER_AMILI_ARM__CLIENT_NO": self.client_no}

    # ---- HTTP handlers ----------------------------------------------------------

    def _http_get_batch(self, request: Request, client_no: str, batch_uuid: str) -> Response:
        with self._lock:
            batch = self._lookup(batch_uuid)
        return self._serve(
            self._refusal(request, client_no),
            batch.batch_uuid if batch is not None else batch_uuid,
            lambda: self._answer_batch(batch_uuid),
        )

    def _answer_batch(self, raw_uuid: str) -> Response:
        with self._lock:
            batch = self._lookup(raw_uuid)
        if batch is None:
            return error_response(404, f"Batch {raw_uuid} not found")
        status, body = self._render(batch, self._stage(batch))
        return json_response(status, body)

    def _refusal(self, request: Request, client_no: str) -> Response | None:
        """401 without a good token, 406 unless JSON is accepted, 403 for another client; else None."""
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if not accepts_json(request.header("Accept")):
            return error_response(406, "Only application/json can be produced")
        if client_no.strip() != self.client_no:
            return error_response(403, f"Access to client {client_no} is not allowed")
        return None

    def _authenticate(self, request: Request) -> Response | None:
        """401 unless the bearer is a live issued token or the static one; None when allowed."""
        authorization = request.header("Authorization")
        token = bearer_token(authorization)
        if (
            token is not None
            and self.static_token
            and secrets.compare_digest(token.encode(), self.static_token.encode())
        ):
            return None
        problem = self.token_service.problem(authorization)
        if problem is None:
            return None
        return error_response(401, problem, challenge(authorization))

    # ---- admin handlers ---------------------------------------------------------

    def _admin_create(self, request: Request) -> Response:
        data = self._admin_fields(request, {"id", "batchUuid", "scenario", "documents"})
        if "id" in data and "batchUuid" in data and data["id"] != data["batchUuid"]:
            raise HttpError(400, "give the batch id as either id or batchUuid, not two different ones")
        batch_uuid = self._admin_text({"batchUuid": data.get("batchUuid", data.get("id"))}, "batchUuid")
        scenario = self._admin_text(data, "scenario", "ok")
        new_id = self._try_create(self.create_batch, batch_uuid, scenario, data.get("documents", 3))
        return json_response(201, {"batchUuid": new_id})

    # ---- batch life -------------------------------------------------------------

    def _lookup(self, item_id: Any) -> _Batch | None:
        return self._batches.get(str(item_id).lower())

    def _final_stage(self, item: _Batch) -> int:
        return FINAL_STAGE

    def _stage_what(self, item: _Batch) -> str:
        return ""

    def _render(self, batch: _Batch, stage: int) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, body)`` of ``batch`` at ``stage``: nothing, half, then all handled."""
        total = batch.documents
        handled = {0: 0, 1: total // 2}.get(stage, total)
        # Failures sit at the end, so they only show once the batch is finished.
        failing = max(1, total // 3) if batch.scenario == "partial" else 0
        results: list[dict[str, Any]] = []
        for k in range(handled):
            document_no = str(FIRST_DOCUMENT_NO + (batch.seq - 1) * MAX_DOCUMENTS + k)
            if k >= total - failing:
                results.append(
                    {
                        "documentNo": document_no,
                        "status": "FAILED",
                        "result": None,
                        "message": f"Customer {543210 + k} does not exist",
                        "warnings": [],
                    }
                )
            else:
                results.append(
                    {
                        "documentNo": document_no,
                        "status": "PROCESSED",
                        "result": "CREATED",
                        "message": "CREATED",
                        "warnings": [dict(SANITIZED_WARNING)] if k == 0 else [],
                    }
                )
        failed = sum(1 for r in results if r["status"] == "FAILED")
        if stage >= FINAL_STAGE:
            status, http_status = OUTCOMES[batch.scenario]
        else:
            status, http_status = "PROCESSING", 202
        body = {
            "batchUuid": batch.batch_uuid,
            # Seed 003 shows clientNo as a number in ARM bodies.
            "clientNo": int(self.client_no) if self.client_no.isdigit() else self.client_no,
            "status": status,
            "created": arm_timestamp(self.clock.wall(batch.born)),
            "finished": arm_timestamp(self.clock.wall(batch.born + FINAL_STAGE * self.stage_seconds))
            if stage >= FINAL_STAGE
            else None,
            "documentsTotal": total,
            "documentsProcessed": len(results) - failed,
            "documentsFailed": failed,
            "results": results,
        }
        return http_status, body
