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
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from simulator.clock import SimClock, born_for_stage, stage_reached
from simulator.faults import FaultPlan, render_fault
from simulator.identity import SharedTokenEndpoint, TokenService, bearer_token
from simulator.router import HttpError, Request, Response, Router, json_response

if TYPE_CHECKING:
    from simulator.server import SimulatorConfig

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
class _Batch:
    batch_uuid: str
    seq: int
    scenario: str
    documents: int
    # Simulated instant the batch was at stage 0; stage k starts at born + k * stage_seconds.
    born: float


class AmiliArmProvider:
    """The fake ARM batch-status API plus its Python and admin controls."""

    name = NAME

    def __init__(
        self,
        clock: SimClock,
        faults: FaultPlan,
        config: SimulatorConfig,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        options = config.options
        self.clock = clock
        self.faults = faults
        self.stage_seconds = float(config.stage_seconds)
        self.client_id = str(options.get("amili_arm_client_id", DEFAULT_CLIENT_ID))
        self.client_secret = str(options.get("amili_arm_client_secret", DEFAULT_CLIENT_SECRET))
        #: Never expires and survives ``expire_tokens``; "" turns it off.
        self.static_token = str(options.get("amili_arm_static_token", DEFAULT_STATIC_TOKEN))
        self.client_no = str(options.get("amili_arm_client_no", DEFAULT_CLIENT_NO))
        self.token_service = TokenService(
            {self.client_id: self.client_secret}, config.token_ttl_seconds, resource=RESOURCE
        )
        self._wait = wait
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        self._seq = 0
        seed = int(options.get("amili_arm_seed", 2))
        if seed < 0:
            raise ValueError(f"amili_arm_seed must be >= 0, got {seed}")
        for index in range(seed):
            # Alternate so the demo shows both a clean and a partial batch.
            self.create_batch(scenario="ok" if index % 2 == 0 else "partial")

    # ---- Python API -------------------------------------------------------------

    @property
    def tokens_issued(self) -> int:
        """How many access tokens this provider's client has obtained from ``POST /token``."""
        return self.token_service.issued

    def expire_tokens(self) -> int:
        """Expire every issued token (next API call with one gets 401); the static token lives on."""
        return self.token_service.expire_all()

    def create_batch(self, batch_uuid: str | None = None, scenario: str = "ok", documents: int = 3) -> str:
        """Create a batch of ``documents`` documents, processing from now; return its batchUuid."""
        if scenario not in OUTCOMES:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(OUTCOMES)}")
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
            self._batches[batch_uuid.lower()] = _Batch(batch_uuid, seq, scenario, documents, born)
        return batch_uuid

    def batches(self) -> list[dict[str, Any]]:
        """List batches as ``{"id", "scenario", "documents", "stage", "final_stage", "status", "http_status"}``."""
        now = self.clock.now()
        with self._lock:
            snapshot = sorted(self._batches.values(), key=lambda b: b.seq)
        result = []
        for batch in snapshot:
            stage = self._stage(batch, now)
            http_status, body = self._render(batch, stage)
            result.append(
                {
                    "id": batch.batch_uuid,
                    "scenario": batch.scenario,
                    "documents": batch.documents,
                    "stage": stage,
                    "final_stage": FINAL_STAGE,
                    "status": body["status"],
                    "http_status": http_status,
                }
            )
        return result

    def batch_body(self, batch_uuid: str) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, body)`` exactly as ``GET .../batches/{uuid}`` would answer now."""
        batch = self._get(batch_uuid)
        return self._render(batch, self._stage(batch, self.clock.now()))

    def stage_of(self, batch_uuid: str) -> int:
        """The stage a batch is at now."""
        return self._stage(self._get(batch_uuid), self.clock.now())

    def set_stage(self, batch_uuid: str, stage: int) -> None:
        """Jump a batch to ``stage`` now; it keeps moving on from there."""
        batch = self._get(batch_uuid)
        born = born_for_stage(stage, FINAL_STAGE, self.clock.now(), self.stage_seconds)
        with self._lock:
            batch.born = born

    # ---- server hooks -----------------------------------------------------------

    def register(self, router: Router) -> None:
        """Add the batch route, the shared ``POST /token`` and the ``/_sim/amili_arm/...`` routes."""
        SharedTokenEndpoint.register(router, NAME, self.token_service, self.faults, self._wait)
        router.add("GET", "/clients/{client_no}/batches/{batch_uuid}", self._http_get_batch, label=NAME)
        admin = f"/_sim/{NAME}"
        router.add("GET", f"{admin}/batches", self._admin_list, label="_sim")
        router.add("POST", f"{admin}/batches", self._admin_create, label="_sim")
        router.add("POST", f"{admin}/batches/{{batch_uuid}}/stage", self._admin_set_stage, label="_sim")
        router.add("GET", f"{admin}/tokens", self._admin_tokens, label="_sim")
        router.add("POST", f"{admin}/tokens/expire", self._admin_expire_tokens, label="_sim")

    def describe_lines(self) -> list[str]:
        """Human lines: client number, token client and the batches' progress."""
        lines = [
            f"Amili ARM, client {self.client_no} ({self.stage_seconds:g} sim-seconds per stage):",
            f"  token: POST /token client_id={self.client_id} ({self.tokens_issued} issued)"
            + (" or the static bearer token" if self.static_token else ""),
        ]
        for info in self.batches():
            lines.append(
                f"  batch {info['id']}  scenario={info['scenario']:<7} documents={info['documents']}"
                f"  stage {info['stage']}/{info['final_stage']}  {info['http_status']} {info['status']}"
            )
        if len(lines) == 2:
            lines.append(f"  (no batches yet; POST /_sim/{NAME}/batches to add one)")
        return lines

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake (the token URL is ``{AUTH_URL}/token``)."""
        return {
            "POLLER_AMILI_ARM__BASE_URL": base_url,
            "POLLER_AMILI_ARM__AUTH_URL": base_url,
            "POLLER_AMILI_ARM__CLIENT_ID": self.client_id,
            "POLLER_AMILI_ARM__CLIENT_SECRET": self.client_secret,
            "POLLER_AMILI_ARM__CLIENT_NO": self.client_no,
        }

    # ---- HTTP handlers ----------------------------------------------------------

    def _http_get_batch(self, request: Request, client_no: str, batch_uuid: str) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if not accepts_json(request.header("Accept")):
            return error_response(406, "Only application/json can be produced")
        if client_no.strip() != self.client_no:
            return error_response(403, f"Access to client {client_no} is not allowed")
        with self._lock:
            batch = self._batches.get(batch_uuid.lower())
        fault = self.faults.take(NAME, batch.batch_uuid if batch is not None else batch_uuid)
        if fault is not None:
            faulted = render_fault(
                fault, normal=lambda: self._answer(batch_uuid), error=self._fault_error, wait=self._wait
            )
            if faulted is not None:
                return faulted
        return self._answer(batch_uuid)

    def _answer(self, raw_uuid: str) -> Response:
        with self._lock:
            batch = self._batches.get(raw_uuid.lower())
        if batch is None:
            return error_response(404, f"Batch {raw_uuid} not found")
        status, body = self._render(batch, self._stage(batch, self.clock.now()))
        return json_response(status, body)

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
        # RFC 6750 section 3: name the error only when a token was presented.
        challenge = 'Bearer error="invalid_token"' if token is not None else "Bearer"
        return error_response(401, problem, {"WWW-Authenticate": challenge})

    @staticmethod
    def _fault_error(status: int) -> Response:
        if status == 401:
            return error_response(401, "The access token is not valid")
        if status == 404:
            return error_response(404, "Batch not found")
        if status == 429:
            return error_response(429, "Too many requests, retry later")
        return error_response(status, "Unexpected error")

    # ---- admin handlers ---------------------------------------------------------

    def _admin_list(self, request: Request) -> Response:
        return json_response(200, {"batches": self.batches()})

    def _admin_create(self, request: Request) -> Response:
        data = request.json_object()
        allowed = {"id", "batchUuid", "scenario", "documents"}
        unknown = set(data) - allowed
        if unknown:
            raise HttpError(
                400, f"unknown field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
            )
        if "id" in data and "batchUuid" in data and data["id"] != data["batchUuid"]:
            raise HttpError(400, "give the batch id as either id or batchUuid, not two different ones")
        batch_uuid = data.get("batchUuid", data.get("id"))
        if batch_uuid is not None and not isinstance(batch_uuid, str):
            raise HttpError(400, "batchUuid must be a string")
        scenario = data.get("scenario", "ok")
        if not isinstance(scenario, str):
            raise HttpError(400, "scenario must be a string")
        try:
            new_id = self.create_batch(batch_uuid, scenario, data.get("documents", 3))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(201, {"batchUuid": new_id})

    def _admin_set_stage(self, request: Request, batch_uuid: str) -> Response:
        data = request.json_object()
        try:
            self.set_stage(batch_uuid, data.get("stage"))  # type: ignore[arg-type]
        except KeyError as exc:
            raise HttpError(404, str(exc.args[0])) from exc
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(200, {"batchUuid": batch_uuid, "stage": self.stage_of(batch_uuid)})

    def _admin_tokens(self, request: Request) -> Response:
        return json_response(200, {"tokens_issued": self.tokens_issued, "active": self.token_service.active()})

    def _admin_expire_tokens(self, request: Request) -> Response:
        return json_response(200, {"expired": self.expire_tokens(), "tokens_issued": self.tokens_issued})

    # ---- batch life -------------------------------------------------------------

    def _get(self, batch_uuid: str) -> _Batch:
        with self._lock:
            batch = self._batches.get(batch_uuid.lower())
        if batch is None:
            raise KeyError(f"batch {batch_uuid} does not exist")
        return batch

    def _stage(self, batch: _Batch, now: float) -> int:
        return stage_reached(batch.born, now, self.stage_seconds, FINAL_STAGE)

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
