"""Fake of Amili Sweden's ADA API: JWT login and Eve-style ``/cases`` (seed 004, PROVIDERS.md section 4).

The login is ``simulator.amili_ada_login``, the case bodies ``simulator.amili_ada_case`` and the
query engine of ``GET /cases`` ``simulator.eve``. Cases follow a scripted life (a *scenario*) on the
shared SimClock, one stage every ``stage_seconds`` simulated seconds.

Decisions where the docs are silent (PROVIDERS.md marks them [U]): ``max_results`` above 100 is
clamped to 100, as Eve's PAGINATION_LIMIT does; ``projection`` is honoured; ``where`` takes the Mongo
operators Eve passes through (see ``simulator.eve``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simulator.amili_ada_case import FIRST_INVOICE_NUMBER, SCENARIOS, Case, CaseBodies, object_id
from simulator.amili_ada_login import AdaLogin
from simulator.config import SimulatorConfig
from simulator.eve import BadQuery, answer_document, answer_list, eve_error, json_param, safe_matches
from simulator.fake import AdminItems, FakeProvider, delegated
from simulator.router import HttpError, Request, Response, Router, json_response

NAME = "amili_ada"
#: Fault ref that fails the login endpoint (item faults never touch it).
TOKEN_REF = "token"

_EVE_404 = (
    "The requested URL was not found on the server. If you entered the URL manually please check "
    "your spelling and try again."
)


class FakeAmiliAda(FakeProvider[Case]):
    """The fake Amili ADA API (login + cases) plus its Python and admin controls."""

    name = NAME
    noun = "case"
    id_field = "_id"
    described = {"cases": ("_id", "invoice_number", "state", "status")}
    fault_errors = {
        401: ("Invalid access token",),
        404: (_EVE_404,),
        429: ("Too many requests, retry later",),
    }

    def _configure(self, config: SimulatorConfig) -> None:
        self.login = AdaLogin(self.options, config.token_ttl_seconds)
        self.bodies = CaseBodies(self.clock, self.stage_seconds)
        self._cases: dict[str, Case] = {}
        self._next_seq = 0
        self._next_number = FIRST_INVOICE_NUMBER
        scenarios = tuple(SCENARIOS)
        for index in range(self._seed("amili_ada_seed")):
            self.create_case(scenario=scenarios[index % len(scenarios)])

    def error(self, status: int, *args: Any) -> Response:
        """Eve's ``{"_status": "ERR", "_error": {"code", "message"}}``."""
        return eve_error(status, *args)

    # ---- the login, as the fake's own attributes ------------------------------------

    wall_time = delegated(
        "login.wall_time", "The real clock of JWT ``exp`` checks and token expiry; tests may replace it.", settable=True
    )
    api_code = delegated("login.api_code", "The api code the login JWT must carry.")
    algorithm = delegated("login.algorithm", "The generated key's algorithm (None when a public key was configured).")
    public_key_pem = delegated("login.public_key_pem", "The registered public key the login JWT is checked with.")
    private_key_pem = delegated("login.private_key_pem", "The generated private key (None if one was configured).")
    private_key_path = delegated("login.private_key_path", "Where the generated private key was written.")
    tokens_issued = delegated("login.tokens_issued", "Access tokens issued by the login so far.")

    def make_login_jwt(self, api_code: str | None = None, lifetime: float = 600.0) -> str:
        """Sign the login JWT a client would send (needs the generated private key)."""
        return self.login.make_login_jwt(api_code, lifetime)

    def expire_tokens(self) -> int:
        """Make every access token issued so far expired; return how many were live."""
        return self.login.expire_all()

    # ---- Python API -------------------------------------------------------------

    def create_case(self, invoice_number: str | None = None, scenario: str = "paid") -> str:
        """Create a case at stage 0 now; return its ``_id`` (auto invoice numbers start at INV-2025-015)."""
        self._check_scenario(scenario, SCENARIOS)
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
            case = Case(
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
        result = []
        for case, stage in self._staged(self._cases.values):
            body = self.bodies.render(case, stage)
            ids = {"_id": case.case_id, "invoice_number": case.invoice_number}
            result.append(self._entry(ids, case, stage, state=body["state"], status=body["status"]))
        return result

    def case_body(self, case_id: str) -> dict[str, Any]:
        """Return the case exactly as ``GET /cases/{id}`` would now."""
        case = self._get(case_id)
        return self.bodies.render(case, self._stage(case))

    # ---- server hooks -----------------------------------------------------------

    def _register_api(self, router: Router) -> None:
        router.add("GET", "/authenticates/api-code", self._http_login_jwt, label=NAME)
        router.add("POST", "/authenticates/api-code", self._http_login_api_code, label=NAME)
        router.add("GET", "/cases", self._http_list_cases, label=NAME)
        router.add("GET", "/cases/{case_id}", self._http_get_case, label=NAME)

    def register(self, router: Router) -> None:
        """Add the API routes and the admin routes (``/_sim/amili_ada/keys`` too)."""
        super().register(router)
        self._admin_route(router, "GET", "keys", lambda request: json_response(200, self.login.keys()))

    def _admin_items(self) -> AdminItems:
        return {"cases": (self.cases, self._admin_create)}

    def _describe_header(self) -> list[str]:
        if self.login.private_key_path is not None:
            key = f"sign the login JWT {self.login.algorithm} with {self.login.private_key_path}"
        else:
            key = "sign the login JWT with the private key matching amili_ada_public_key_pem"
        return [f"Amili ADA cases ({self.stage_seconds:g} sim-seconds per stage; api_code={self.api_code}, {key}):"]

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake (key settings only for a generated key)."""
        env = {"POLLER_AMILI_ADA__BASE_URL": base_url, "POLLER_AMILI_ADA__API_CODE": self.api_code}
        if self.login.private_key_path is not None and self.login.algorithm is not None:
            env["POLLER_AMILI_ADA__ALGORITHM"] = self.login.algorithm
            env["POLLER_AMILI_ADA__PRIVATE_KEY_FILE"] = self.login.private_key_path
        return env

    # ---- HTTP: login ------------------------------------------------------------

    def _http_login_jwt(self, request: Request) -> Response:
        return self._login(lambda: self._login_with_jwt(request))

    def _login_with_jwt(self, request: Request) -> Response:
        signed = request.header("X-API-Key")
        if not signed:
            return eve_error(401, "Missing X-API-Key header: send a JWT signed with your registered key")
        return self.login.verify(signed.strip()) or self.login.issue()

    def _http_login_api_code(self, request: Request) -> Response:
        # The production docs' static-IP method: the API code in the body. Loopback counts as registered.
        return self._login(lambda: self._login_with_api_code(request))

    def _login_with_api_code(self, request: Request) -> Response:
        try:
            data = request.json()
        except HttpError as exc:
            return eve_error(400, exc.message)
        if not isinstance(data, dict):
            return eve_error(400, "body must be a JSON object")
        api_code = data.get("api_code")
        if api_code is None:
            if request.header("X-API-Key"):
                return self._login_with_jwt(request)
            return eve_error(400, 'give "api_code" in the JSON body (or a signed JWT in X-API-Key)')
        if not isinstance(api_code, str) or api_code != self.api_code:
            return eve_error(401, "Unknown api_code")
        return self.login.issue()

    def _login(self, answer: Callable[[], Response]) -> Response:
        # Only faults scoped to "token" hit the login: an unscoped fault is for the status endpoints.
        fault = self.faults.take_scoped(NAME, TOKEN_REF)
        if fault is None:
            return answer()
        return self._answer(fault, self.login.preview)

    # ---- HTTP: cases ------------------------------------------------------------

    def _http_list_cases(self, request: Request) -> Response:
        denied = self.login.check(request)
        if denied is not None:
            return denied
        fault = self.faults.take_any(NAME, self._query_refs(request))
        return self._answer(fault, lambda: answer_list(request, self._documents()))

    def _http_get_case(self, request: Request, case_id: str) -> Response:
        denied = self.login.check(request)
        if denied is not None:
            return denied
        with self._lock:
            case = self._cases.get(case_id)
        refs = [case_id] if case is None else [case_id, case.invoice_number]
        fault = self.faults.take_any(NAME, [ref for ref in refs if ref != TOKEN_REF])
        return self._answer(fault, lambda: self._answer_case(request, case_id))

    def _answer_case(self, request: Request, case_id: str) -> Response:
        with self._lock:
            case = self._cases.get(case_id)
        if case is None:
            return eve_error(404, _EVE_404)
        return answer_document(request, self.bodies.render(case, self._stage(case)))

    def _documents(self) -> list[dict[str, Any]]:
        return [self.bodies.render(case, stage) for case, stage in self._staged(self._cases.values)]

    def _query_refs(self, request: Request) -> list[str]:
        """Refs a list query is about, so a fault armed for one case hits however it is looked up."""
        try:
            where = json_param(request, "where")
        except BadQuery:
            return []
        if not isinstance(where, dict):
            return []
        matched = [doc for doc in self._documents() if safe_matches(doc, where)]
        if len(matched) == 1:
            refs = [matched[0]["debt"]["invoice_number"], matched[0]["_id"]]
        else:
            named = where.get("debt.invoice_number")
            refs = [named] if isinstance(named, str) else []
        return [ref for ref in refs if ref != TOKEN_REF]

    # ---- admin handlers ---------------------------------------------------------

    def _admin_create(self, request: Request) -> Response:
        data = self._admin_fields(request, {"invoice_number", "scenario"})
        scenario = self._admin_text(data, "scenario", "paid")
        case_id = self._try_create(self.create_case, data.get("invoice_number"), scenario)
        case = self._get(case_id)
        return json_response(201, {"_id": case_id, "invoice_number": case.invoice_number, "scenario": case.scenario})

    # ---- case life --------------------------------------------------------------

    def _lookup(self, item_id: Any) -> Case | None:
        return self._cases.get(item_id)

    def _final_stage(self, item: Case) -> int:
        return SCENARIOS[item.scenario]
