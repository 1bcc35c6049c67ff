"""Fake of Billit's ``GET /v1/orders/{OrderID}`` (seed 002, PROVIDERS.md section 5).

Each order follows a scripted life (a *scenario*) on the shared SimClock, one stage every
``stage_seconds`` simulated seconds (bodies in ``simulator.billit_order``); the list
``GET /v1/orders`` is ``simulator.billit_list``.

Requests authenticate with an ``ApiKey`` header or, when the ``billit_oauth`` option is on, with
``Authorization: Bearer`` tokens from ``POST /OAuth2/token`` (``simulator.billit_oauth``:
Authorization Code flow; single-use refresh tokens rotated on every refresh).
"""

from __future__ import annotations

from typing import Any

from simulator.billit_list import OrderList
from simulator.billit_oauth import (
    ACCESS_TOKEN_ERRORS,
    TOKEN_FAULT_REF,
    grant,
    oauth_from_options,
    token_fault_error,
    token_request_problem,
    truthy,
)
from simulator.billit_order import SCENARIOS, Order, OrderBodies, error_response
from simulator.config import SimulatorConfig
from simulator.fake import AdminItems, FakeProvider, delegated
from simulator.faults import render_fault
from simulator.router import HttpError, Request, Response, Router, json_response

NAME = "billit"
FIRST_ORDER_ID = 1001


class FakeBillit(FakeProvider[Order]):
    """The fake Billit API plus its Python and admin controls."""

    name = NAME
    noun = "order"
    id_field = "OrderID"
    described = {"orders": ("id", "OrderStatus")}
    fault_errors = {
        401: ("Unauthorized", "Invalid ApiKey"),
        404: ("NotFound", "Order not found"),
        429: ("TooManyRequests", "Too many requests, retry later"),
    }

    def _configure(self, config: SimulatorConfig) -> None:
        self.api_key = config.billit_api_key
        self.party_id = str(config.billit_party_id)
        #: Off by default: the fake is then an ApiKey-only account and rejects every bearer token.
        self.oauth_enabled = truthy(self.options.get("billit_oauth", False))
        self.oauth = oauth_from_options(self.options, config.token_ttl_seconds)
        self.bodies = OrderBodies(self.clock, self.stage_seconds)
        self._orders: dict[int, Order] = {}
        self._next_id = FIRST_ORDER_ID

    def error(self, status: int, *args: Any) -> Response:
        """Billit's ``{"errors": [{"Code", "Description"}]}``."""
        return error_response(status, *args)

    # ---- Python API -------------------------------------------------------------

    def create_order(self, order_id: int | None = None, scenario: str = "paid") -> int:
        """Create an order at stage 0 now; return its OrderID (auto ids start at 1001)."""
        self._check_scenario(scenario, SCENARIOS)
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
            self._orders[order_id] = Order(scenario, born, order_id)
        self._changed(order_id, 0)
        return order_id

    def orders(self) -> list[dict[str, Any]]:
        """List orders as ``{"id", "scenario", "stage", "final_stage", "OrderStatus"}``."""
        return [
            self._entry({"id": order.order_id}, order, stage,
                        OrderStatus=self.bodies.render(order, stage)["OrderStatus"])
            for order, stage in self.staged_orders()
        ]

    def staged_orders(self) -> list[tuple[Order, int]]:
        """Every order (a copy) with its stage, all at one instant, by OrderID."""
        return self._staged(lambda: sorted(self._orders.values(), key=lambda o: o.order_id))

    def order_body(self, order_id: int) -> dict[str, Any]:
        """Return the order object exactly as ``GET /v1/orders/{id}`` would now."""
        order = self._get(order_id)
        return self.bodies.render(order, self._stage(order))

    def expire_tokens(self) -> int:
        """Revoke every access token issued so far (next use: 401 AccessTokenRevoked); return how many.

        Refresh tokens are untouched, so a client can recover by refreshing.
        """
        return self.oauth.expire_all()

    tokens_issued = delegated("oauth.tokens_issued", "Access tokens issued by ``POST /OAuth2/token`` so far.")
    refresh_tokens_issued = delegated("oauth.refresh_tokens_issued", "Refresh tokens issued so far.")
    refreshes_ok = delegated("oauth.refreshes_ok", "Successful ``refresh_token`` grants.")
    refreshes_rejected = delegated(
        "oauth.refreshes_rejected", "``refresh_token`` grants answered 400 InvalidRefreshToken (spent or unknown)."
    )
    current_refresh_token = delegated("oauth.current_refresh_token", "The one refresh token accepted right now.")

    # ---- server hooks -----------------------------------------------------------

    def _register_api(self, router: Router) -> None:
        router.add("GET", "/v1/orders/{order_id}", self._http_get_order, label=NAME)
        OrderList(self).register(router)
        router.add("POST", "/OAuth2/token", self._http_token, label=NAME)

    def register(self, router: Router) -> None:
        """Add the API routes and the admin routes (``/_sim/billit/tokens`` too)."""
        super().register(router)
        self._admin_route(router, "GET", "tokens", self._admin_tokens)

    def _admin_items(self) -> AdminItems:
        return {"orders": (self.orders, self._admin_create)}

    def _describe_header(self) -> list[str]:
        lines = [f"Billit orders ({self.stage_seconds:g} sim-seconds per stage):"]
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
        # Normalise "01001" to "1001" so a fault armed for an order hits however it is spelled.
        ref = str(int(order_id)) if order_id.isascii() and order_id.isdigit() else order_id
        return self._serve(self.authenticate(request), ref, lambda: self._answer_order(order_id))

    def _answer_order(self, raw_id: str) -> Response:
        if not (raw_id.isascii() and raw_id.isdigit()):
            return error_response(400, "GenericError", f"OrderID must be an integer, got '{raw_id}'")
        with self._lock:
            order = self._orders.get(int(raw_id))
        if order is None:
            return error_response(404, "NotFound", "Order not found")
        return json_response(200, self.bodies.render(order, self._stage(order)))

    def authenticate(self, request: Request) -> Response | None:
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
                return error_response(401, code, ACCESS_TOKEN_ERRORS[code])
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
        problem = token_request_problem(data)
        if problem is not None:
            return error_response(400, "GenericError", problem)
        if not self.oauth.client_ok(data["client_id"], data["client_secret"]):
            return error_response(401, "InvalidClient", "Unknown client_id or wrong client_secret")
        # Only a fault armed with ref "token" hits the token endpoint; unscoped ones are for the orders.
        fault = self.faults.take_scoped(NAME, TOKEN_FAULT_REF)
        if fault is not None:
            faulted = render_fault(
                fault,
                # "malformed" garbles an answer without spending the grant, so only "slow" (which
                # answers late but for real) can leave a client holding a spent refresh token.
                normal=lambda: json_response(200, self.oauth.preview()),
                error=token_fault_error,
                wait=self._wait,
            )
            if faulted is not None:
                return faulted
        return grant(self.oauth, data)

    # ---- admin handlers ---------------------------------------------------------

    def _admin_tokens(self, request: Request) -> Response:
        return json_response(200, {"oauth_enabled": self.oauth_enabled, **self.oauth.snapshot()})

    def _admin_expire_tokens(self, request: Request) -> Response:
        if request.json_object():
            raise HttpError(400, "this route takes no fields")
        return json_response(200, {"revoked": self.expire_tokens()})

    def _admin_create(self, request: Request) -> Response:
        data = self._admin_fields(request, {"OrderID", "scenario"})
        order_id = self._try_create(self.create_order, data.get("OrderID"), self._admin_text(data, "scenario", "paid"))
        return json_response(201, {"OrderID": order_id})

    def _admin_key(self, item_id: str) -> Any:
        if not item_id.isdigit():
            raise HttpError(400, f"OrderID must be an integer, got {item_id!r}")
        return int(item_id)

    # ---- order life -------------------------------------------------------------

    def _lookup(self, item_id: Any) -> Order | None:
        return self._orders.get(item_id)

    def _final_stage(self, item: Order) -> int:
        return SCENARIOS[item.scenario]
