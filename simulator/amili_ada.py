"""Fake of Amili Sweden's ADA API: JWT login and Eve-style ``/cases`` (seed 004, PROVIDERS.md section 4).

Auth follows https://docs.amili.se/reference/common/authentication: the client
signs a short-lived JWT ``{"api_code", "exp"}`` with its registered private key,
trades it at ``GET /authenticates/api-code`` (header ``X-API-Key``) for an opaque
access token, then sends that token in ``X-API-Key`` on every call.

Cases follow a scripted life (a *scenario*) on the shared SimClock, one stage
every ``stage_seconds`` simulated seconds. A case's body is a pure function of
the case and its stage, so polling within a stage returns the same bytes (and
the same ``_etag``).

Decisions where the docs are silent (PROVIDERS.md marks them [U]):

* The login answers 200 ``{"token": ..., "expires": "<RFC 1123>"}``; the token
  lives ``token_ttl_seconds`` of real wall time.
* ``max_results`` above 100 is clamped to 100, as Eve's PAGINATION_LIMIT does.
* ``projection`` is honoured (inclusion or exclusion, dotted paths allowed;
  ``_id``, ``_created``, ``_updated`` and ``_etag`` always stay in inclusion mode).
* ``where`` matches by equality on top-level or dotted fields, plus the Mongo
  operators Eve passes through (``$eq $ne $gt $gte $lt $lte $in $nin $exists``,
  ``$and``/``$or``); RFC 1123 strings compare as dates.
* A closed case gets ``state``/``status`` ``"closed"`` and a ``closed`` object
  ``{"date", "reason": "paid"|"cancelled"}``; clients should key on ``closed``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulator.clock import SimClock, born_for_stage, stage_reached
from simulator.faults import FaultPlan, render_fault
from simulator.router import HttpError, Request, Response, Router, json_response

if TYPE_CHECKING:
    from simulator.server import SimulatorConfig

NAME = "amili_ada"

# Last stage of each scenario; after it nothing changes.
SCENARIOS: dict[str, int] = {"paid": 4, "cancelled": 2}

#: The signing algorithms the test docs list for the login JWT.
ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512")
#: The algorithm of the key pair generated when no public key is configured (P-521).
GENERATED_ALGORITHM = "ES512"
DEFAULT_API_CODE = "sim-ada-api-code"
#: The docs ask for ``exp`` about 10 minutes ahead; further than this is refused.
MAX_JWT_LIFETIME = 15 * 60
#: Fault ref that fails the login endpoint (item faults never touch it).
TOKEN_REF = "token"
PRIVATE_KEY_FILENAME = "amili_ada_private_key.pem"

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
# Eve adds these to every projection, so an inclusion projection still identifies the document.
META_FIELDS = ("_id", "_created", "_updated", "_etag")

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

_EVE_404 = (
    "The requested URL was not found on the server. If you entered the URL manually please check "
    "your spelling and try again."
)


def rfc1123(moment: datetime) -> str:
    """Format a naive-UTC or aware datetime like Amili: ``Tue, 07 Oct 2025 07:41:01 GMT``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_rfc1123(text: str) -> datetime | None:
    """Parse an RFC 1123 date (as an aware datetime), or None when ``text`` is not one."""
    if not isinstance(text, str) or not text.endswith("GMT"):
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def eve_error(status: int, message: str) -> Response:
    """Eve's error envelope: ``{"_status": "ERR", "_error": {"code", "message"}}``."""
    return json_response(status, {"_status": "ERR", "_error": {"code": status, "message": message}})


def object_id(moment: datetime, kind: str, seq: int) -> str:
    """A deterministic 24-hex Mongo ObjectId for the ``seq``-th object of ``kind`` made at ``moment``."""
    process, counter = _OBJECT_ID_PARTS[kind]
    seconds = int(moment.replace(tzinfo=UTC).timestamp()) & 0xFFFFFFFF
    return f"{seconds:08x}{process}{(counter + seq) & 0xFFFFFF:06x}"


@dataclass
class _Case:
    case_id: str
    invoice_id: str
    customer_id: str
    invoice_number: str
    scenario: str
    seq: int
    # Simulated instant the case was at stage 0; stage k starts at born + k * stage_seconds.
    born: float


class AmiliAdaProvider:
    """The fake Amili ADA API (login + cases) plus its Python and admin controls.

    ``wall_time`` (default ``time.time``) is the real clock used for JWT ``exp`` checks and
    access-token expiry; tests may replace it to jump past a token's lifetime without sleeping.
    """

    name = NAME

    def __init__(
        self,
        clock: SimClock,
        faults: FaultPlan,
        config: SimulatorConfig,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        if config.stage_seconds <= 0:
            raise ValueError(f"stage_seconds must be > 0, got {config.stage_seconds}")
        options = config.options
        self.clock = clock
        self.faults = faults
        self.stage_seconds = float(config.stage_seconds)
        self.token_ttl_seconds = float(config.token_ttl_seconds)
        self.api_code = str(options.get("amili_ada_api_code", DEFAULT_API_CODE))
        self.wall_time: Callable[[], float] = time.time
        self.tokens_issued = 0
        self._wait = wait
        self._lock = threading.Lock()
        self._cases: dict[str, _Case] = {}
        self._next_seq = 0
        self._next_number = FIRST_INVOICE_NUMBER
        # access token -> real expiry (unix seconds)
        self._tokens: dict[str, float] = {}

        self.private_key_pem: str | None = None
        self.private_key_path: str | None = None
        self.algorithm: str | None = None
        configured = options.get("amili_ada_public_key_pem")
        if configured:
            pem = configured.encode() if isinstance(configured, str) else bytes(configured)
            try:
                self._public_key = serialization.load_pem_public_key(pem)
            except ValueError as exc:
                raise ValueError(f"amili_ada_public_key_pem is not a PEM public key: {exc}") from exc
            self.public_key_pem = pem.decode()
        else:
            private_key = ec.generate_private_key(ec.SECP521R1())
            self._public_key = private_key.public_key()
            self.algorithm = GENERATED_ALGORITHM
            self.private_key_pem = private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            self.public_key_pem = self._public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
            self.private_key_path = self._write_private_key(options.get("amili_ada_key_dir"))

        seed = options.get("amili_ada_seed", 2)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"amili_ada_seed must be a non-negative integer, got {seed!r}")
        scenarios = tuple(SCENARIOS)
        for index in range(seed):
            self.create_case(scenario=scenarios[index % len(scenarios)])

    def _write_private_key(self, key_dir: str | os.PathLike[str] | None) -> str:
        """Write the generated key where the poller (maybe another process) can read it."""
        if key_dir:
            directory = os.fspath(key_dir)
            os.makedirs(directory, exist_ok=True)
        else:
            directory = tempfile.mkdtemp(prefix="sim-amili-ada-")
            # Our own temp dir goes when the provider does (or at exit); a caller's dir is left alone.
            weakref.finalize(self, shutil.rmtree, directory, True)
        path = os.path.join(directory, PRIVATE_KEY_FILENAME)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(self.private_key_pem or "")
        return path

    # ---- Python API -------------------------------------------------------------

    def create_case(self, invoice_number: str | None = None, scenario: str = "paid") -> str:
        """Create a case at stage 0 now; return its ``_id`` (auto invoice numbers start at INV-2025-015)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
        if invoice_number is not None and (not isinstance(invoice_number, str) or not invoice_number.strip()):
            raise ValueError(f"invoice_number must be a non-empty string, got {invoice_number!r}")
        born = self.clock.now()
        moment = self.clock.wall(born)
        with self._lock:
            taken = {case.invoice_number for case in self._cases.values()}
            if invoice_number is None:
                while f"INV-2025-{self._next_number:03d}" in taken:
                    self._next_number += 1
                invoice_number = f"INV-2025-{self._next_number:03d}"
                self._next_number += 1
            elif invoice_number in taken:
                raise ValueError(f"a case for invoice number {invoice_number!r} already exists")
            seq = self._next_seq
            self._next_seq += 1
            case = _Case(
                case_id=object_id(moment, "case", seq),
                invoice_id=object_id(moment, "invoice", seq),
                customer_id=object_id(moment, "customer", seq),
                invoice_number=invoice_number,
                scenario=scenario,
                seq=seq,
                born=born,
            )
            self._cases[case.case_id] = case
        return case.case_id

    def cases(self) -> list[dict[str, Any]]:
        """List cases as ``{"_id", "invoice_number", "scenario", "stage", "final_stage", "state", "status"}``."""
        now = self.clock.now()
        with self._lock:
            snapshot = list(self._cases.values())
        result = []
        for case in snapshot:
            stage = self._stage(case, now)
            state, status = _LIVES[case.scenario][stage]
            result.append(
                {
                    "_id": case.case_id,
                    "invoice_number": case.invoice_number,
                    "scenario": case.scenario,
                    "stage": stage,
                    "final_stage": SCENARIOS[case.scenario],
                    "state": state,
                    "status": status,
                }
            )
        return result

    def stage_of(self, case_id: str) -> int:
        """Return the stage a case is at now."""
        return self._stage(self._get(case_id), self.clock.now())

    def set_stage(self, case_id: str, stage: int) -> None:
        """Jump a case to ``stage`` now; it keeps moving on from there."""
        case = self._get(case_id)
        born = born_for_stage(stage, SCENARIOS[case.scenario], self.clock.now(), self.stage_seconds,
                              f"scenario {case.scenario!r}")
        with self._lock:
            case.born = born

    def case_body(self, case_id: str) -> dict[str, Any]:
        """Return the case exactly as ``GET /cases/{id}`` would now."""
        case = self._get(case_id)
        return self._render(case, self._stage(case, self.clock.now()))

    def make_login_jwt(self, api_code: str | None = None, lifetime: float = 600.0) -> str:
        """Sign the login JWT a client would send (needs the generated private key)."""
        if self.private_key_pem is None or self.algorithm is None:
            raise RuntimeError("no private key: the public key was configured via amili_ada_public_key_pem")
        claims = {
            "api_code": self.api_code if api_code is None else api_code,
            "exp": int(self.wall_time() + lifetime),
        }
        return jwt.encode(claims, self.private_key_pem, algorithm=self.algorithm)

    def expire_tokens(self) -> int:
        """Make every access token issued so far expired; return how many were live."""
        now = self.wall_time()
        with self._lock:
            live = sum(1 for expiry in self._tokens.values() if expiry > now)
            self._tokens = dict.fromkeys(self._tokens, 0.0)
        return live

    # ---- server hooks -----------------------------------------------------------

    def register(self, router: Router) -> None:
        """Add the ADA routes and the ``/_sim/amili_ada/...`` admin routes."""
        router.add("GET", "/authenticates/api-code", self._http_login_jwt, label=NAME)
        router.add("POST", "/authenticates/api-code", self._http_login_api_code, label=NAME)
        router.add("GET", "/cases", self._http_list_cases, label=NAME)
        router.add("GET", "/cases/{case_id}", self._http_get_case, label=NAME)
        router.add("GET", "/_sim/amili_ada/cases", self._admin_list, label="_sim")
        router.add("POST", "/_sim/amili_ada/cases", self._admin_create, label="_sim")
        router.add("POST", "/_sim/amili_ada/cases/{case_id}/stage", self._admin_set_stage, label="_sim")
        router.add("POST", "/_sim/amili_ada/tokens/expire", self._admin_expire_tokens, label="_sim")
        router.add("GET", "/_sim/amili_ada/keys", self._admin_keys, label="_sim")

    def describe_lines(self) -> list[str]:
        """Human lines: how to log in, and the cases with where they are in their life."""
        if self.private_key_path is not None:
            key = f"sign the login JWT {self.algorithm} with {self.private_key_path}"
        else:
            key = "sign the login JWT with the private key matching amili_ada_public_key_pem"
        lines = [f"Amili ADA cases ({self.stage_seconds:g} sim-seconds per stage; api_code={self.api_code}, {key}):"]
        for info in self.cases():
            lines.append(
                f"  {info['_id']}  {info['invoice_number']}  scenario={info['scenario']:<9} "
                f"stage {info['stage']}/{info['final_stage']}  state={info['state']} status={info['status']}"
            )
        if len(lines) == 1:
            lines.append("  (none yet; POST /_sim/amili_ada/cases to add one)")
        return lines

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake (key settings only for a generated key)."""
        env = {"POLLER_AMILI_ADA__BASE_URL": base_url, "POLLER_AMILI_ADA__API_CODE": self.api_code}
        if self.private_key_path is not None and self.algorithm is not None:
            env["POLLER_AMILI_ADA__ALGORITHM"] = self.algorithm
            env["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"] = self.private_key_path
        return env

    # ---- HTTP: login ------------------------------------------------------------

    def _http_login_jwt(self, request: Request) -> Response:
        faulted = self._token_fault()
        if faulted is not None:
            return faulted
        signed = request.header("X-API-Key")
        if not signed:
            return eve_error(401, "Missing X-API-Key header: send a JWT signed with your registered key")
        refused = self._verify_login_jwt(signed.strip())
        if refused is not None:
            return refused
        return self._issue_token()

    def _http_login_api_code(self, request: Request) -> Response:
        # The production docs' static-IP method: the API code in the body. Loopback counts as registered.
        faulted = self._token_fault()
        if faulted is not None:
            return faulted
        try:
            data = request.json()
        except HttpError as exc:
            return eve_error(400, exc.message)
        if not isinstance(data, dict):
            return eve_error(400, "body must be a JSON object")
        api_code = data.get("api_code")
        if api_code is None:
            signed = request.header("X-API-Key")
            if signed:
                refused = self._verify_login_jwt(signed.strip())
                return refused if refused is not None else self._issue_token()
            return eve_error(400, 'give "api_code" in the JSON body (or a signed JWT in X-API-Key)')
        if not isinstance(api_code, str) or api_code != self.api_code:
            return eve_error(401, "Unknown api_code")
        return self._issue_token()

    def _token_fault(self) -> Response | None:
        # Only faults scoped to "token" hit the login: an unscoped fault is for the status endpoints.
        if not any(f["ref"] == TOKEN_REF for f in self.faults.active(NAME)):
            return None
        fault = self.faults.take(NAME, TOKEN_REF)
        if fault is None:
            return None
        return render_fault(
            fault,
            # A would-be login answer (not stored) for "malformed" to cut in half.
            normal=lambda: json_response(
                200, {"token": secrets.token_urlsafe(32), "expires": rfc1123(datetime.now(UTC))}
            ),
            error=self._fault_error,
            wait=self._wait,
        )

    def _verify_login_jwt(self, signed: str) -> Response | None:
        """Check the client's login JWT; return the error to send, or None when it is good."""
        try:
            header = jwt.get_unverified_header(signed)
        except jwt.PyJWTError:
            return eve_error(401, "X-API-Key is not a valid JWT")
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            return eve_error(401, f"JWT algorithm {algorithm!r} not accepted; use one of {', '.join(ALGORITHMS)}")
        try:
            # exp is checked below so a too-distant exp (400) can be told from an expired one (401).
            claims = jwt.decode(
                signed,
                self._public_key,  # type: ignore[arg-type]
                algorithms=list(ALGORITHMS),
                options={"require": ["exp"], "verify_exp": False},
            )
        except jwt.MissingRequiredClaimError:
            return eve_error(400, 'JWT must carry an "exp" claim')
        except (jwt.PyJWTError, ValueError, TypeError):
            return eve_error(401, "JWT signature does not match the registered public key")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            return eve_error(400, 'JWT "exp" must be a number (unix seconds)')
        now = self.wall_time()
        if exp > now + MAX_JWT_LIFETIME:
            return eve_error(400, f'JWT "exp" is more than {MAX_JWT_LIFETIME // 60} minutes ahead')
        if exp <= now:
            return eve_error(401, "JWT has expired")
        if claims.get("api_code") != self.api_code:
            return eve_error(401, "Unknown api_code")
        return None

    def _issue_token(self) -> Response:
        token = secrets.token_urlsafe(32)
        expiry = self.wall_time() + self.token_ttl_seconds
        with self._lock:
            now = self.wall_time()
            # Forget long-dead tokens so a long run does not grow the table forever.
            self._tokens = {t: e for t, e in self._tokens.items() if e > now - 3600}
            self._tokens[token] = expiry
            self.tokens_issued += 1
        expires = rfc1123(datetime.fromtimestamp(expiry, UTC))
        return json_response(200, {"token": token, "expires": expires})

    def _authenticate(self, request: Request) -> Response | None:
        """Check the access token in X-API-Key; return the 401 to send, or None when allowed."""
        token = request.header("X-API-Key")
        if not token:
            return eve_error(401, "Missing X-API-Key header: authenticate at /authenticates/api-code first")
        with self._lock:
            expiry = self._tokens.get(token.strip())
        if expiry is None:
            return eve_error(401, "Invalid access token")
        if expiry <= self.wall_time():
            return eve_error(401, "Access token has expired")
        return None

    # ---- HTTP: cases ------------------------------------------------------------

    def _http_list_cases(self, request: Request) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        fault = self.faults.take(NAME, self._pick_ref(self._query_refs(request)))
        if fault is not None:
            faulted = render_fault(
                fault, normal=lambda: self._answer_list(request), error=self._fault_error, wait=self._wait
            )
            if faulted is not None:
                return faulted
        return self._answer_list(request)

    def _http_get_case(self, request: Request, case_id: str) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        with self._lock:
            case = self._cases.get(case_id)
        refs = [case_id] if case is None else [case_id, case.invoice_number]
        fault = self.faults.take(NAME, self._pick_ref(refs))
        if fault is not None:
            faulted = render_fault(
                fault,
                normal=lambda: self._answer_case(request, case_id),
                error=self._fault_error,
                wait=self._wait,
            )
            if faulted is not None:
                return faulted
        return self._answer_case(request, case_id)

    def _answer_list(self, request: Request) -> Response:
        try:
            where = _json_param(request, "where")
            projection = _json_param(request, "projection")
            sort = _parse_sort(request.query_one("sort"))
            page = _int_param(request, "page", 1)
            max_results = min(_int_param(request, "max_results", DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE)
            documents = self._documents()
            matched = [doc for doc in documents if where is None or _matches(doc, where)]
            # Stable sorts applied last key first give a multi-key sort.
            for field, descending in reversed(sort):
                matched.sort(key=_sort_by(field), reverse=descending)
            start = (page - 1) * max_results
            items = [_project(doc, projection) for doc in matched[start : start + max_results]]
        except _BadQuery as exc:
            return eve_error(400, str(exc))
        return json_response(
            200, {"_items": items, "_meta": {"page": page, "max_results": max_results, "total": len(matched)}}
        )

    def _answer_case(self, request: Request, case_id: str) -> Response:
        with self._lock:
            case = self._cases.get(case_id)
        if case is None:
            return eve_error(404, _EVE_404)
        body = self._render(case, self._stage(case, self.clock.now()))
        headers = {"ETag": f'"{body["_etag"]}"', "Last-Modified": body["_updated"]}
        if _not_modified(request, body):
            return Response(304, b"", headers=headers)
        try:
            projection = _json_param(request, "projection")
            shown = _project(body, projection)
        except _BadQuery as exc:
            return eve_error(400, str(exc))
        return json_response(200, shown, headers)

    def _documents(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        with self._lock:
            snapshot = list(self._cases.values())
        return [self._render(case, self._stage(case, now)) for case in snapshot]

    def _query_refs(self, request: Request) -> list[str]:
        """Refs a list query is about, so a fault armed for one case hits however it is looked up."""
        try:
            where = _json_param(request, "where")
        except _BadQuery:
            return []
        if not isinstance(where, dict):
            return []
        matched = [doc for doc in self._documents() if _safe_matches(doc, where)]
        if len(matched) == 1:
            return [matched[0]["debt"]["invoice_number"], matched[0]["_id"]]
        named = where.get("debt.invoice_number")
        return [named] if isinstance(named, str) else []

    def _pick_ref(self, candidates: list[str]) -> str | None:
        # Prefer a candidate some fault is scoped to; else the first (take() then falls back to unscoped).
        candidates = [c for c in candidates if c != TOKEN_REF]
        scoped = {f["ref"] for f in self.faults.active(NAME) if f["ref"] is not None}
        for candidate in candidates:
            if candidate in scoped:
                return candidate
        return candidates[0] if candidates else None

    @staticmethod
    def _fault_error(status: int) -> Response:
        if status == 401:
            return eve_error(401, "Invalid access token")
        if status == 404:
            return eve_error(404, _EVE_404)
        if status == 429:
            return eve_error(429, "Too many requests, retry later")
        return eve_error(status, "Internal server error")

    # ---- admin handlers ---------------------------------------------------------

    def _admin_list(self, request: Request) -> Response:
        return json_response(200, {"cases": self.cases()})

    def _admin_create(self, request: Request) -> Response:
        data = request.json_object()
        unknown = set(data) - {"invoice_number", "scenario"}
        if unknown:
            fields = ", ".join(sorted(unknown))
            raise HttpError(400, f"unknown field(s): {fields}; allowed: invoice_number, scenario")
        scenario = data.get("scenario", "paid")
        if not isinstance(scenario, str):
            raise HttpError(400, "scenario must be a string")
        try:
            case_id = self.create_case(data.get("invoice_number"), scenario)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        case = self._get(case_id)
        return json_response(201, {"_id": case_id, "invoice_number": case.invoice_number, "scenario": case.scenario})

    def _admin_set_stage(self, request: Request, case_id: str) -> Response:
        data = request.json_object()
        try:
            self.set_stage(case_id, data.get("stage"))  # type: ignore[arg-type]
        except KeyError as exc:
            raise HttpError(404, str(exc.args[0])) from exc
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(200, {"_id": case_id, "stage": self.stage_of(case_id)})

    def _admin_expire_tokens(self, request: Request) -> Response:
        return json_response(200, {"expired": self.expire_tokens(), "tokens_issued": self.tokens_issued})

    def _admin_keys(self, request: Request) -> Response:
        return json_response(
            200,
            {
                "api_code": self.api_code,
                "algorithm": self.algorithm,
                "public_key_pem": self.public_key_pem,
                "private_key_pem": self.private_key_pem,
                "private_key_path": self.private_key_path,
            },
        )

    # ---- case life --------------------------------------------------------------

    def _get(self, case_id: str) -> _Case:
        with self._lock:
            case = self._cases.get(case_id)
        if case is None:
            raise KeyError(f"case {case_id} does not exist")
        return case

    def _stage(self, case: _Case, now: float) -> int:
        return stage_reached(case.born, now, self.stage_seconds, SCENARIOS[case.scenario])

    def _moment(self, case: _Case, stage: int) -> datetime:
        return self.clock.wall(case.born + stage * self.stage_seconds)

    def _render(self, case: _Case, stage: int) -> dict[str, Any]:
        """Build the case object for ``case`` at ``stage`` (seed 004's field set plus ``closed``)."""
        stamps = [rfc1123(self._moment(case, k)) for k in range(stage + 1)]
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

    def _transaction(self, case: _Case, stage: int, origin: str, kind: str, tag: str, amount: int) -> dict[str, Any]:
        moment = self._moment(case, stage)
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


# ---- Eve query helpers ------------------------------------------------------------


class _BadQuery(Exception):
    """A query parameter Eve would answer 400 for."""


_MISSING = object()
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _json_param(request: Request, name: str) -> Any:
    raw = request.query_one(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _BadQuery(f"Unable to parse `{name}` clause: {exc}") from exc
    if not isinstance(value, dict):
        raise _BadQuery(f"`{name}` must be a JSON object")
    return value


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_one(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadQuery(f"`{name}` must be an integer, got {raw!r}") from None
    if value < 1:
        raise _BadQuery(f"`{name}` must be >= 1, got {value}")
    return value


def _parse_sort(raw: str | None) -> list[tuple[str, bool]]:
    """``"-_created,_id"`` -> ``[("_created", True), ("_id", False)]`` (True = descending)."""
    if raw is None or not raw.strip():
        return []
    result = []
    for part in raw.split(","):
        part = part.strip()
        descending = part.startswith("-")
        field = part[1:] if descending else part
        if not field or any(ch in field for ch in "[](){}'\" "):
            raise _BadQuery(f"Unable to parse `sort` clause {raw!r}: use field names, '-' for descending")
        result.append((field, descending))
    return result


def _values(doc: Any, path: str) -> list[Any]:
    """Every value at dotted ``path``; like Mongo, lists on the way are searched element by element."""
    values = [doc]
    for part in path.split("."):
        found = []
        for value in values:
            if isinstance(value, dict):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                found.extend(item[part] for item in value if isinstance(item, dict) and part in item)
        values = found
    return values


def _comparable(value: Any) -> Any:
    date = parse_rfc1123(value) if isinstance(value, str) else None
    return date if date is not None else value


def _compare(op: str, value: Any, operand: Any) -> bool:
    left, right = _comparable(value), _comparable(operand)
    try:
        return bool(_COMPARISONS[op](left, right))
    except TypeError:
        return False


def _field_matches(values: list[Any], condition: Any) -> bool:
    candidates = list(values)
    for value in values:
        if isinstance(value, list):
            candidates.extend(value)
    if isinstance(condition, dict) and condition and all(str(k).startswith("$") for k in condition):
        for op, operand in condition.items():
            if op == "$eq":
                ok = _field_matches(values, operand)
            elif op == "$ne":
                ok = not _field_matches(values, operand)
            elif op in _COMPARISONS:
                ok = any(_compare(op, value, operand) for value in candidates)
            elif op in ("$in", "$nin"):
                if not isinstance(operand, list):
                    raise _BadQuery(f"{op} needs a list")
                found = any(_field_matches(values, item) for item in operand)
                ok = found if op == "$in" else not found
            elif op == "$exists":
                ok = bool(values) == bool(operand)
            else:
                raise _BadQuery(f"operator {op} is not supported")
            if not ok:
                return False
        return True
    if condition is None:
        return not values or any(value is None for value in candidates)
    return any(_equal(value, condition) for value in candidates)


def _equal(value: Any, condition: Any) -> bool:
    # JSON true must not equal 1 (Python's True == 1 would say it does).
    if isinstance(value, bool) or isinstance(condition, bool):
        return value is condition
    return bool(value == condition)


def _matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    for key, condition in where.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not all(isinstance(c, dict) for c in condition):
                raise _BadQuery(f"{key} needs a list of objects")
            results = [_matches(doc, c) for c in condition]
            if not (all(results) if key == "$and" else any(results)):
                return False
        elif key.startswith("$"):
            raise _BadQuery(f"operator {key} is not supported")
        elif not _field_matches(_values(doc, key), condition):
            return False
    return True


def _safe_matches(doc: dict[str, Any], where: dict[str, Any]) -> bool:
    try:
        return _matches(doc, where)
    except _BadQuery:
        return False


def _sort_by(field: str) -> Callable[[dict[str, Any]], tuple[int, Any]]:
    """A sort key function for the (dotted) ``field``."""
    return lambda doc: _sort_key(_values(doc, field))


def _sort_key(values: list[Any]) -> tuple[int, Any]:
    # Ranks keep mixed types comparable; missing/null first ascending, as Mongo sorts.
    value = values[0] if values else None
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (4, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        date = parse_rfc1123(value)
        return (2, date.timestamp()) if date is not None else (3, value)
    return (5, json.dumps(value, sort_keys=True))


def _project(doc: dict[str, Any], projection: dict[str, Any] | None) -> dict[str, Any]:
    """Apply an Eve/Mongo projection ``{"field": 1}`` (inclusion) or ``{"field": 0}`` (exclusion)."""
    if not projection:
        return doc
    flags = {}
    for field, flag in projection.items():
        if flag not in (0, 1) or not isinstance(flag, (int, bool)):
            raise _BadQuery(f"projection values must be 0 or 1, got {flag!r} for {field!r}")
        flags[field] = bool(flag)
    data_flags = {f: v for f, v in flags.items() if f not in META_FIELDS}
    if data_flags and len(set(data_flags.values())) > 1:
        raise _BadQuery("projection cannot mix inclusion and exclusion")
    including = any(data_flags.values()) if data_flags else all(flags.values())
    tree: dict[str, Any] = {}
    for field, flag in flags.items():
        if field in META_FIELDS and including:
            continue
        if flag != including:
            continue
        node = tree
        parts = field.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child is True:
                break
            node = child
        else:
            node[parts[-1]] = True
    if including:
        for meta in META_FIELDS:
            tree[meta] = True
        included: dict[str, Any] = _include(doc, tree)
        return included
    excluded: dict[str, Any] = _exclude(doc, tree)
    return excluded


def _include(doc: Any, tree: dict[str, Any]) -> Any:
    if isinstance(doc, list):
        return [_include(item, tree) for item in doc if isinstance(item, dict)]
    if not isinstance(doc, dict):
        return doc
    kept = {}
    for key, value in doc.items():
        wanted = tree.get(key)
        if wanted is True:
            kept[key] = value
        elif isinstance(wanted, dict) and isinstance(value, (dict, list)):
            kept[key] = _include(value, wanted)
    return kept


def _exclude(doc: Any, tree: dict[str, Any]) -> Any:
    if isinstance(doc, list):
        return [_exclude(item, tree) for item in doc]
    if not isinstance(doc, dict):
        return doc
    kept = {}
    for key, value in doc.items():
        unwanted = tree.get(key)
        if unwanted is True:
            continue
        kept[key] = _exclude(value, unwanted) if isinstance(unwanted, dict) else value
    return kept


def _not_modified(request: Request, body: dict[str, Any]) -> bool:
    """Eve's conditional GET: If-None-Match wins; else If-Modified-Since against ``_updated``."""
    if_none_match = request.header("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        if "*" in tags:
            return True
        bare = {tag.removeprefix("W/").strip('"') for tag in tags}
        return body["_etag"] in bare
    if_modified_since = request.header("If-Modified-Since")
    if if_modified_since is not None:
        since = parse_rfc1123(if_modified_since.strip())
        updated = parse_rfc1123(body["_updated"])
        return since is not None and updated is not None and updated <= since
    return False
