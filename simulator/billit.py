"""Fake of Billit's ``GET /v1/orders/{OrderID}`` (seed 002, PROVIDERS.md section 5).

Each order follows a scripted life (a *scenario*) on the shared SimClock, one
stage every ``stage_seconds`` simulated seconds. The body at a given stage is a
pure function of the order and the stage, so polling within a stage returns the
same bytes.

Requests authenticate with an ``ApiKey`` header or, when the ``billit_oauth``
option is on, with ``Authorization: Bearer`` tokens from ``POST /OAuth2/token``
(Authorization Code flow; single-use refresh tokens rotated on every refresh).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from simulator.clock import SimClock, born_for_stage, next_stage_at, stage_reached
from simulator.faults import Fault, FaultPlan, render_fault
from simulator.router import HttpError, Request, Response, Router, json_response

NAME = "billit"
FIRST_ORDER_ID = 1001

# Last stage of each scenario; after it nothing changes.
SCENARIOS: dict[str, int] = {"paid": 5, "refused": 3}

DESTINATION = "0208:0446725877"
REFUSED_REASON = "InvalidInvoice"
REFUSED_INFO = "Inconsistency between VAT number and tax code of the recipient of the invoice (acquirer)"

_FILE_ID_NAMESPACE = uuid.UUID("6f1c3a52-4d0e-5b8a-9c1e-2a7d4b9e0f11")

# OAuth2 defaults, overridable through SimulatorConfig.options.
DEFAULT_CLIENT_ID = "sim-billit-client"
DEFAULT_CLIENT_SECRET = "sim-billit-secret"
DEFAULT_REFRESH_TOKEN = "sim-billit-refresh-0"
DEFAULT_AUTH_CODE = "sim-billit-code"
GRANT_TYPES = ("authorization_code", "refresh_token")
# The fault ref that aims a fault at the token endpoint instead of the orders.
TOKEN_FAULT_REF = "token"


def billit_timestamp(moment: datetime) -> str:
    """Format like Billit (.NET "yyyy-MM-ddTHH:mm:ss.FFF"): no zone, trailing zeros dropped.

    Billit sends e.g. ``2025-05-07T14:09:17.563`` and ``2025-03-26T14:30:48.11``,
    so clients must cope with one to three fraction digits, or none.
    """
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond // 1000:03d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def error_body(code: str, description: str) -> dict[str, Any]:
    """Billit's error envelope: ``{"errors": [{"Code": ..., "Description": ...}]}``."""
    return {"errors": [{"Code": code, "Description": description}]}


def error_response(status: int, code: str, description: str) -> Response:
    """A Billit error body with the given HTTP status."""
    return json_response(status, error_body(code, description))


_ACCESS_TOKEN_ERRORS: dict[str, str] = {
    "InvalidAccessToken": "The access token is not valid",
    "AccessTokenExpired": "The access token has expired",
    "AccessTokenRevoked": "The access token has been revoked",
}


def _token_request_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a token request body, or None when it has what its grant needs."""
    grant_type = data.get("grant_type")
    if not isinstance(grant_type, str) or not grant_type:
        return "grant_type is required"
    if grant_type not in GRANT_TYPES:
        return f"unsupported grant_type {grant_type!r}; supported: {', '.join(GRANT_TYPES)}"
    needed = ["client_id", "client_secret"]
    needed += ["code", "redirect_uri"] if grant_type == "authorization_code" else ["refresh_token"]
    for key in needed:
        value = data.get(key)
        if not isinstance(value, str) or not value:
            return f"{key} is required for grant_type {grant_type}"
    return None


def _truthy(value: object) -> bool:
    # Options may come from a command line or env as text, where "false" must mean off.
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


@dataclass
class _AccessToken:
    # Real wall-clock instant (time.time()) it stops working: clients judge expiry by their own clock.
    expires_at: float
    revoked: bool = False


class BillitOAuth:
    """Billit's OAuth2 token service for one client and one user's grant.

    Holds the one live refresh token (single-use: each refresh kills it and
    issues the next) and every access token issued. Thread-safe; the
    check-and-rotate of a refresh token is atomic, so two clients racing with
    the same refresh token get exactly one success.
    """

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        refresh_token: str = DEFAULT_REFRESH_TOKEN,
        auth_code: str | None = DEFAULT_AUTH_CODE,
        token_ttl_seconds: float = 3600.0,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        if token_ttl_seconds < 0:
            raise ValueError(f"token_ttl_seconds must be >= 0, got {token_ttl_seconds}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_seconds = float(token_ttl_seconds)
        #: Source of "now" for access-token expiry; tests replace it instead of sleeping.
        self.wall_time = wall_time
        self._lock = threading.Lock()
        self._access: dict[str, _AccessToken] = {}
        self._refresh_token = refresh_token
        self._auth_code = auth_code
        self._tokens_issued = 0
        self._refresh_tokens_issued = 0
        self._refreshes_ok = 0
        self._refreshes_rejected = 0

    # ---- counters (read by tests) -------------------------------------------------

    @property
    def tokens_issued(self) -> int:
        """Access tokens issued so far, by either grant."""
        with self._lock:
            return self._tokens_issued

    @property
    def refresh_tokens_issued(self) -> int:
        """Refresh tokens issued so far (not counting the configured initial one)."""
        with self._lock:
            return self._refresh_tokens_issued

    @property
    def refreshes_ok(self) -> int:
        """``refresh_token`` grants that succeeded."""
        with self._lock:
            return self._refreshes_ok

    @property
    def refreshes_rejected(self) -> int:
        """``refresh_token`` grants refused because the token was spent or unknown."""
        with self._lock:
            return self._refreshes_rejected

    @property
    def current_refresh_token(self) -> str:
        """The only refresh token that works right now."""
        with self._lock:
            return self._refresh_token

    # ---- grants -----------------------------------------------------------------

    def client_ok(self, client_id: str, client_secret: str) -> bool:
        """Whether the pair is this fake's registered OAuth client."""
        # compare_digest keeps the fake honest about not leaking which half was wrong.
        return secrets.compare_digest(client_id, self.client_id) and secrets.compare_digest(
            client_secret, self.client_secret
        )

    def redeem_code(self, code: str) -> dict[str, Any] | None:
        """Trade the (single-use) authorization code for tokens; None if it is wrong or spent.

        A new authorization starts a new grant, so its refresh token replaces the
        current one.
        """
        with self._lock:
            if self._auth_code is None or not secrets.compare_digest(code, self._auth_code):
                return None
            self._auth_code = None
            return self._issue_locked()

    def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        """Rotate the refresh token; None (and it counts as rejected) if it is not the current one."""
        with self._lock:
            if not secrets.compare_digest(refresh_token, self._refresh_token):
                self._refreshes_rejected += 1
                return None
            self._refreshes_ok += 1
            return self._issue_locked()

    def preview(self) -> dict[str, Any]:
        """A token response that changes nothing, for the "malformed" fault to truncate."""
        return self._token_body(
            f"sim-billit-access-x-{secrets.token_hex(8)}", f"sim-billit-refresh-x-{secrets.token_hex(8)}"
        )

    # ---- access tokens ------------------------------------------------------------

    def check_access(self, token: str) -> str | None:
        """Return Billit's error code for a bearer token, or None when it is good."""
        now = self.wall_time()
        with self._lock:
            access = self._access.get(token)
            if access is None:
                return "InvalidAccessToken"
            # Revocation is an explicit act, so it is reported even if the token has also run out.
            if access.revoked:
                return "AccessTokenRevoked"
            if now >= access.expires_at:
                return "AccessTokenExpired"
        return None

    def expire_all(self) -> int:
        """Revoke every access token issued so far; return how many were still usable."""
        with self._lock:
            live = [a for a in self._access.values() if not a.revoked]
            for access in live:
                access.revoked = True
        return len(live)

    def snapshot(self) -> dict[str, Any]:
        """Counters and the current refresh token, as JSON-ready data."""
        now = self.wall_time()
        with self._lock:
            live = sum(1 for a in self._access.values() if not a.revoked and now < a.expires_at)
            return {
                "client_id": self.client_id,
                "current_refresh_token": self._refresh_token,
                "tokens_issued": self._tokens_issued,
                "access_tokens_live": live,
                "refresh_tokens_issued": self._refresh_tokens_issued,
                "refreshes_ok": self._refreshes_ok,
                "refreshes_rejected": self._refreshes_rejected,
            }

    def _issue_locked(self) -> dict[str, Any]:
        # The serial keeps tokens readable in logs; the random part keeps them from
        # being guessable or valid in a later simulator run.
        self._tokens_issued += 1
        self._refresh_tokens_issued += 1
        access_token = f"sim-billit-access-{self._tokens_issued}-{secrets.token_hex(8)}"
        refresh_token = f"sim-billit-refresh-{self._refresh_tokens_issued}-{secrets.token_hex(8)}"
        self._access[access_token] = _AccessToken(expires_at=self.wall_time() + self.token_ttl_seconds)
        self._refresh_token = refresh_token
        return self._token_body(access_token, refresh_token)

    def _token_body(self, access_token: str, refresh_token: str) -> dict[str, Any]:
        return {
            "token_type": "Bearer",
            "expires_in": int(self.token_ttl_seconds),
            "access_token": access_token,
            "refresh_token": refresh_token,
        }


@dataclass
class _Order:
    order_id: int
    scenario: str
    # Simulated instant the order was at stage 0; stage k starts at born + k * stage_seconds.
    born: float


class BillitProvider:
    """The fake Billit API plus its Python and admin controls."""

    name = NAME

    def __init__(
        self,
        clock: SimClock,
        faults: FaultPlan,
        *,
        api_key: str = "sim-billit-key",
        party_id: str = "1234",
        stage_seconds: float = 10.0,
        wait: Callable[[float], object] = time.sleep,
        options: Mapping[str, Any] | None = None,
        token_ttl_seconds: float = 3600.0,
    ) -> None:
        if stage_seconds <= 0:
            raise ValueError(f"stage_seconds must be > 0, got {stage_seconds}")
        options = options or {}
        self.clock = clock
        self.faults = faults
        self.api_key = api_key
        self.party_id = str(party_id)
        self.stage_seconds = float(stage_seconds)
        self._wait = wait
        #: Off by default: the fake is then an ApiKey-only account and rejects every bearer token.
        self.oauth_enabled = _truthy(options.get("billit_oauth", False))
        auth_code = options.get("billit_auth_code", DEFAULT_AUTH_CODE)
        self.oauth = BillitOAuth(
            client_id=str(options.get("billit_client_id", DEFAULT_CLIENT_ID)),
            client_secret=str(options.get("billit_client_secret", DEFAULT_CLIENT_SECRET)),
            refresh_token=str(options.get("billit_refresh_token", DEFAULT_REFRESH_TOKEN)),
            # None means "no authorization pending": the code grant then always fails.
            auth_code=None if auth_code is None else str(auth_code),
            token_ttl_seconds=token_ttl_seconds,
        )
        # Serialises "is a token fault armed?" with taking it (see _take_token_fault).
        self._token_fault_lock = threading.Lock()
        self._lock = threading.Lock()
        self._orders: dict[int, _Order] = {}
        self._next_id = FIRST_ORDER_ID
        #: Told of each order created (with its first stage) or moved (simulator.pushes).
        self.on_change: Callable[[str, int | None], None] | None = None

    # ---- Python API -------------------------------------------------------------

    def create_order(self, order_id: int | None = None, scenario: str = "paid") -> int:
        """Create an order at stage 0 now; return its OrderID (auto ids start at 1001)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
        if order_id is not None and (
            not isinstance(order_id, int) or isinstance(order_id, bool) or order_id < 1
        ):
            raise ValueError(f"OrderID must be a positive integer, got {order_id!r}")
        born = self.clock.now()
        with self._lock:
            if order_id is None:
                while self._next_id in self._orders:
                    self._next_id += 1
                order_id = self._next_id
                self._next_id += 1
            elif order_id in self._orders:
                raise ValueError(f"order {order_id} already exists")
            self._orders[order_id] = _Order(order_id, scenario, born)
        if self.on_change is not None:
            self.on_change(str(order_id), 0)
        return order_id

    def orders(self) -> list[dict[str, Any]]:
        """List orders as ``{"id", "scenario", "stage", "final_stage", "OrderStatus"}``."""
        now = self.clock.now()
        with self._lock:
            snapshot = sorted(self._orders.values(), key=lambda o: o.order_id)
        result = []
        for order in snapshot:
            stage = self._stage(order, now)
            result.append(
                {
                    "id": order.order_id,
                    "scenario": order.scenario,
                    "stage": stage,
                    "final_stage": SCENARIOS[order.scenario],
                    "OrderStatus": self._render(order, stage)["OrderStatus"],
                }
            )
        return result

    def stage_of(self, order_id: int) -> int:
        """Return the stage an order is at now."""
        return self._stage(self._get(order_id), self.clock.now())

    def set_stage(self, order_id: int, stage: int) -> None:
        """Jump an order to ``stage`` now; it keeps moving on from there."""
        order = self._get(order_id)
        born = born_for_stage(stage, SCENARIOS[order.scenario], self.clock.now(), self.stage_seconds,
                              f"scenario {order.scenario!r}")
        with self._lock:
            order.born = born
        if self.on_change is not None:
            self.on_change(str(order_id), None)

    def next_change_at(self, order_id: int) -> float | None:
        """When the order next moves on (simulated seconds; None once final)."""
        order = self._get(order_id)
        return next_stage_at(order.born, self.clock.now(), self.stage_seconds, SCENARIOS[order.scenario])

    def order_body(self, order_id: int) -> dict[str, Any]:
        """Return the order object exactly as ``GET /v1/orders/{id}`` would now."""
        order = self._get(order_id)
        return self._render(order, self._stage(order, self.clock.now()))

    def expire_tokens(self) -> int:
        """Revoke every access token issued so far (next use: 401 AccessTokenRevoked); return how many.

        Refresh tokens are untouched, so a client can recover by refreshing.
        """
        return self.oauth.expire_all()

    @property
    def tokens_issued(self) -> int:
        """Access tokens issued by ``POST /OAuth2/token`` so far."""
        return self.oauth.tokens_issued

    @property
    def refresh_tokens_issued(self) -> int:
        """Refresh tokens issued by ``POST /OAuth2/token`` so far."""
        return self.oauth.refresh_tokens_issued

    @property
    def refreshes_ok(self) -> int:
        """Successful ``refresh_token`` grants."""
        return self.oauth.refreshes_ok

    @property
    def refreshes_rejected(self) -> int:
        """``refresh_token`` grants answered 400 InvalidRefreshToken (spent or unknown token)."""
        return self.oauth.refreshes_rejected

    @property
    def current_refresh_token(self) -> str:
        """The one refresh token the token endpoint accepts right now."""
        return self.oauth.current_refresh_token

    # ---- server hooks -----------------------------------------------------------

    def register(self, router: Router) -> None:
        """Add the Billit API route and the ``/_sim/billit/...`` admin routes."""
        router.add("GET", "/v1/orders/{order_id}", self._http_get_order, label=NAME)
        # GET /v1/orders (the OData list); imported here because simulator.billit_list imports this module.
        from simulator.billit_list import OrderList

        OrderList(self).register(router)
        router.add("POST", "/OAuth2/token", self._http_token, label=NAME)
        router.add("GET", "/_sim/billit/orders", self._admin_list, label="_sim")
        router.add("POST", "/_sim/billit/orders", self._admin_create, label="_sim")
        router.add("POST", "/_sim/billit/orders/{order_id}/stage", self._admin_set_stage, label="_sim")
        router.add("GET", "/_sim/billit/tokens", self._admin_tokens, label="_sim")
        router.add("POST", "/_sim/billit/tokens/expire", self._admin_expire_tokens, label="_sim")

    def describe_lines(self) -> list[str]:
        """Human lines listing the orders and where they are in their life."""
        lines = [f"Billit orders ({self.stage_seconds:g} sim-seconds per stage):"]
        for info in self.orders():
            lines.append(
                f"  {info['id']}  scenario={info['scenario']:<8} stage {info['stage']}/{info['final_stage']}"
                f"  OrderStatus={info['OrderStatus']}"
            )
        if len(lines) == 1:
            lines.append("  (none yet; POST /_sim/billit/orders to add one)")
        if self.oauth_enabled:
            info = self.oauth.snapshot()
            lines.append(
                f"  OAuth2: client_id={info['client_id']}  refresh token now {info['current_refresh_token']}"
                f"  ({info['tokens_issued']} access tokens issued, {info['refreshes_rejected']} refreshes rejected)"
            )
        return lines

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake (OAuth2 client settings when ``billit_oauth``)."""
        if self.oauth_enabled:
            return {
                "POLLER_BILLIT__BASE_URL": base_url,
                "POLLER_BILLIT__CLIENT_ID": self.oauth.client_id,
                "POLLER_BILLIT__CLIENT_SECRET": self.oauth.client_secret,
                "POLLER_BILLIT__REFRESH_TOKEN": self.oauth.current_refresh_token,
                "POLLER_BILLIT__PARTY_ID": self.party_id,
            }
        return {
            "POLLER_BILLIT__BASE_URL": base_url,
            "POLLER_BILLIT__API_KEY": self.api_key,
            "POLLER_BILLIT__PARTY_ID": self.party_id,
        }

    # ---- HTTP handlers ----------------------------------------------------------

    def _http_get_order(self, request: Request, order_id: str) -> Response:
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        # Normalise "01001" to "1001" so a fault armed for an order hits however it is spelled.
        ref = str(int(order_id)) if order_id.isascii() and order_id.isdigit() else order_id
        fault = self.faults.take(NAME, ref)
        if fault is not None:
            faulted = render_fault(
                fault,
                normal=lambda: self._answer(order_id),
                error=self._fault_error,
                wait=self._wait,
            )
            if faulted is not None:
                return faulted
        return self._answer(order_id)

    def _answer(self, raw_id: str) -> Response:
        if not (raw_id.isascii() and raw_id.isdigit()):
            return error_response(400, "GenericError", f"OrderID must be an integer, got '{raw_id}'")
        with self._lock:
            order = self._orders.get(int(raw_id))
        if order is None:
            return error_response(404, "NotFound", "Order not found")
        return json_response(200, self._render(order, self._stage(order, self.clock.now())))

    def _authenticate(self, request: Request) -> Response | None:
        """Check ApiKey or bearer token, then PartyID; return the 401 to send, or None when allowed."""
        api_key = request.header("ApiKey")
        if api_key is None:
            authorization = request.header("Authorization") or ""
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer":
                return error_response(401, "Unauthorized", "Missing ApiKey header")
            if not self.oauth_enabled:
                # An ApiKey-only account has no OAuth client, so no bearer token can be valid.
                return error_response(401, "Unauthorized", "Bearer token is not valid")
            code = self.oauth.check_access(token.strip())
            if code is not None:
                return error_response(401, code, _ACCESS_TOKEN_ERRORS[code])
        elif api_key != self.api_key:
            return error_response(401, "Unauthorized", "Invalid ApiKey")
        party_id = request.header("PartyID")
        if party_id is None:
            return error_response(401, "Unauthorized", "Missing PartyID header")
        if party_id.strip() != self.party_id:
            what = "ApiKey" if api_key is not None else "Access token"
            return error_response(401, "Unauthorized", f"{what} is not valid for this PartyID")
        return None

    def _http_token(self, request: Request) -> Response:
        """``POST /OAuth2/token``: the authorization_code and refresh_token grants (JSON body)."""
        if not self.oauth_enabled:
            return error_response(
                401, "InvalidClient", "No OAuth2 client is registered (simulator option billit_oauth is off)"
            )
        try:
            data = request.json_object()
        except HttpError as exc:
            return error_response(400, "GenericError", exc.message)
        problem = _token_request_problem(data)
        if problem is not None:
            return error_response(400, "GenericError", problem)
        if not self.oauth.client_ok(data["client_id"], data["client_secret"]):
            return error_response(401, "InvalidClient", "Unknown client_id or wrong client_secret")
        fault = self._take_token_fault()
        if fault is not None:
            faulted = render_fault(
                fault,
                # "malformed" garbles an answer without spending the grant, so only "slow" (which
                # answers late but for real) can leave a client holding a spent refresh token.
                normal=lambda: json_response(200, self.oauth.preview()),
                error=self._token_fault_error,
                wait=self._wait,
            )
            if faulted is not None:
                return faulted
        if data["grant_type"] == "authorization_code":
            body = self.oauth.redeem_code(data["code"])
            if body is None:
                return error_response(
                    400, "InvalidAuthorizationCode", "The authorization code is unknown or was already used"
                )
        else:
            body = self.oauth.refresh(data["refresh_token"])
            if body is None:
                return error_response(
                    400, "InvalidRefreshToken", "The refresh token is unknown or was already used"
                )
        # RFC 6749 5.1: token responses must not be cached.
        return json_response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _take_token_fault(self) -> Fault | None:
        """Take a fault armed with ref "token", ignoring the unscoped ones meant for orders."""
        # FaultPlan.take falls back to an unscoped fault when no scoped one is left, so
        # the look and the take must not interleave with another token request.
        with self._token_fault_lock:
            if not any(f["ref"] == TOKEN_FAULT_REF for f in self.faults.active(NAME)):
                return None
            return self.faults.take(NAME, TOKEN_FAULT_REF)

    @staticmethod
    def _token_fault_error(status: int) -> Response:
        if status == 401:
            return error_response(401, "InvalidClient", "Unknown client_id or wrong client_secret")
        if status == 404:
            return error_response(404, "NotFound", "Not found")
        if status == 429:
            return error_response(429, "TooManyRequests", "Too many requests, retry later")
        return error_response(status, "GenericError", "Unexpected error")

    @staticmethod
    def _fault_error(status: int) -> Response:
        if status == 401:
            return error_response(401, "Unauthorized", "Invalid ApiKey")
        if status == 404:
            return error_response(404, "NotFound", "Order not found")
        if status == 429:
            return error_response(429, "TooManyRequests", "Too many requests, retry later")
        return error_response(status, "GenericError", "Unexpected error")

    # ---- admin handlers ---------------------------------------------------------

    def _admin_list(self, request: Request) -> Response:
        return json_response(200, {"orders": self.orders()})

    def _admin_tokens(self, request: Request) -> Response:
        return json_response(200, {"oauth_enabled": self.oauth_enabled, **self.oauth.snapshot()})

    def _admin_expire_tokens(self, request: Request) -> Response:
        if request.json_object():
            raise HttpError(400, "this route takes no fields")
        return json_response(200, {"revoked": self.expire_tokens()})

    def _admin_create(self, request: Request) -> Response:
        data = request.json_object()
        unknown = set(data) - {"OrderID", "scenario"}
        if unknown:
            fields = ", ".join(sorted(unknown))
            raise HttpError(400, f"unknown field(s): {fields}; allowed: OrderID, scenario")
        scenario = data.get("scenario", "paid")
        if not isinstance(scenario, str):
            raise HttpError(400, "scenario must be a string")
        try:
            order_id = self.create_order(data.get("OrderID"), scenario)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(201, {"OrderID": order_id})

    def _admin_set_stage(self, request: Request, order_id: str) -> Response:
        data = request.json_object()
        if not order_id.isdigit():
            raise HttpError(400, f"OrderID must be an integer, got {order_id!r}")
        try:
            self.set_stage(int(order_id), data.get("stage"))  # type: ignore[arg-type]
        except KeyError as exc:
            raise HttpError(404, str(exc.args[0])) from exc
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        return json_response(200, {"OrderID": int(order_id), "stage": self.stage_of(int(order_id))})

    # ---- order life -------------------------------------------------------------

    def _get(self, order_id: int) -> _Order:
        with self._lock:
            order = self._orders.get(order_id)
        if order is None:
            raise KeyError(f"order {order_id} does not exist")
        return order

    def _stage(self, order: _Order, now: float) -> int:
        return stage_reached(order.born, now, self.stage_seconds, SCENARIOS[order.scenario])

    def _stamp(self, order: _Order, stage: int) -> str:
        """Timestamp of the moment ``order`` reached ``stage``.

        A deterministic sub-second offset per (order, stage) makes the fraction
        look like Billit's (".563", ".23") without depending on real time.
        """
        digest = hashlib.sha256(f"{order.order_id}:{stage}".encode()).digest()
        jitter = (int.from_bytes(digest[:2], "big") % 1000) / 1000 * min(1.0, self.stage_seconds) * 0.5
        return billit_timestamp(self.clock.wall(order.born + stage * self.stage_seconds + jitter))

    def _file_id(self, order: _Order, message: str) -> str:
        return str(uuid.uuid5(_FILE_ID_NAMESPACE, f"billit/{order.order_id}/{message}"))

    def _message(self, order: _Order, stage: int, key: str, description: str | None) -> dict[str, Any]:
        incoming = description is not None
        message: dict[str, Any] = {}
        # Billit omits Description on the outgoing transport message (seed 002).
        if incoming:
            message["Description"] = description
        message.update(
            {
                "FileID": self._file_id(order, key),
                "CreationDate": self._stamp(order, stage),
                "TransportType": "Peppol",
                "Success": True,
                "Trials": 0 if incoming else 1,
                "Destination": DESTINATION,
                "MessageDirection": "Incoming" if incoming else "Outgoing",
            }
        )
        return message

    def _render(self, order: _Order, stage: int) -> dict[str, Any]:
        """Build the Billit order object for ``order`` at ``stage``."""
        oid = order.order_id
        created_day = self.clock.wall(order.born).replace(hour=0, minute=0, second=0, microsecond=0)
        total_excl = round(100 + (oid * 37) % 900 + ((oid * 13) % 100) / 100, 2)
        total_vat = round(total_excl * 0.21, 2)

        status = "ToSend" if stage == 0 else "ToPay"
        details: dict[str, Any] | None = None
        messages: list[dict[str, Any]] = []
        paid_date: str | None = None

        if stage >= 1:
            details = {"IsDocumentDelivered": False, "DocumentDeliveryStatus": "Pending"}
        if order.scenario == "paid":
            if stage >= 2:
                details = {
                    "DocumentDeliveryDate": self._stamp(order, 2),
                    "IsDocumentDelivered": True,
                    "DocumentDeliveryStatus": "Delivered",
                }
                messages.append(self._message(order, 2, "delivered", None))
            if stage >= 3:
                assert details is not None
                details = {
                    "DocumentDeliveryDate": details["DocumentDeliveryDate"],
                    "DocumentDeliveryInfo": "Ontvangen",
                    "IsDocumentDelivered": True,
                    "DocumentDeliveryStatus": "Delivered",
                }
                messages.append(
                    self._message(order, 3, "imr-ab", "AB: The document has been successfully received.")
                )
            if stage >= 4:
                assert details is not None
                details["DocumentDeliveryInfo"] = "Betaald"
                messages.append(self._message(order, 4, "imr-pd", "PD: The document has been paid."))
            if stage >= 5:
                # The IMR "paid" does not flip Billit's status; the seller records
                # payment later, which is what this stage stands for.
                status = "Paid"
                paid_date = self._stamp(order, 5)
        elif order.scenario == "refused":
            if stage >= 2:
                details = {
                    "DocumentRefusedDate": self._stamp(order, 2),
                    "DocumentRefusedReasonTC": REFUSED_REASON,
                    "DocumentRefusedInfo": REFUSED_INFO,
                    "IsDocumentDelivered": False,
                    "DocumentDeliveryStatus": "Error",
                }
            if stage >= 3:
                status = "Credited"

        body: dict[str, Any] = {
            "OrderID": oid,
            "OrderNumber": f"SIM-{oid}",
            "OrderType": "Invoice",
            "OrderDirection": "Income",
            "OrderStatus": status,
            "OrderDate": billit_timestamp(created_day),
            "ExpiryDate": billit_timestamp(created_day + timedelta(days=30)),
            "Currency": "EUR",
            "TotalExcl": total_excl,
            "TotalVAT": total_vat,
            "TotalIncl": round(total_excl + total_vat, 2),
            "Paid": paid_date is not None,
            "PaidDate": paid_date,
            "IsSent": stage >= 1,
            "LastModified": self._stamp(order, stage),
            "Created": self._stamp(order, 0),
            "CounterParty": {
                "PartyID": 500000 + oid,
                "DisplayName": f"Simulated Customer {oid} BV",
                "VATNumber": "BE" + DESTINATION.split(":", 1)[1],
            },
        }
        if details is not None:
            body["CurrentDocumentDeliveryDetails"] = details
        body["Messages"] = messages
        return body
