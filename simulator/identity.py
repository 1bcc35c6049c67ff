"""Fake OAuth2 client-credentials token service, Amili's "Identiverse" (PROVIDERS.md section 2).

``POST /token`` takes a form-encoded ``grant_type=client_credentials&client_id=…&client_secret=…``
and answers Azure-AD style: ``not_before`` and ``expires_on`` are epoch seconds *as strings*,
``expires_in`` is an int. Each provider owns a ``TokenService`` with its own clients, so a
token is only good for the API of the client that obtained it; ``SharedTokenEndpoint`` puts
all of them behind the one ``/token`` route, as the real service does.

Expiry is in real seconds (``time_fn``, default ``time.time``), not SimClock time: clients
compare ``expires_on`` with their own wall clock.
"""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import parse_qs

from simulator.config import SimulatorConfig
from simulator.fake import FakeProvider, ItemT, error_from
from simulator.faults import Fault, FaultPlan, render_fault
from simulator.router import Request, Response, Router, json_response

TOKEN_PATH = "/token"
FORM_TYPE = "application/x-www-form-urlencoded"
#: ``faults.add(provider, kind, ref=TOKEN_FAULT_REF)`` breaks that provider's token calls.
TOKEN_FAULT_REF = "token"
#: Stats label of the shared route: it serves several providers, so it is none of theirs.
TOKEN_LABEL = "identity"

# Expired grants are kept this long so a late call still hears "expired", not "unknown".
_GRACE_SECONDS = 3600.0
# RFC 6749 section 5.1: token responses must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenRequestError(Exception):
    """A token request the service refuses, carrying the OAuth2 error to answer with."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> Response:
        """The OAuth2 error body ``{"error", "error_description"}`` with this status."""
        return oauth_error(self.status, self.error, self.description)


def oauth_error(status: int, error: str, description: str) -> Response:
    """An OAuth2 error response (RFC 6749 section 5.2)."""
    return json_response(status, {"error": error, "error_description": description}, _NO_STORE)


def parse_form(request: Request) -> dict[str, str]:
    """Decode a form-encoded token request body.

    Raises:
        TokenRequestError: the body is not ``application/x-www-form-urlencoded`` UTF-8,
            or repeats a parameter (RFC 6749 section 3.2 forbids that).
    """
    content_type = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE:
        raise TokenRequestError(400, "invalid_request", f"Content-Type must be {FORM_TYPE}")
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenRequestError(400, "invalid_request", "body is not valid UTF-8") from None
    parsed = parse_qs(text, keep_blank_values=True)
    repeated = sorted(key for key, values in parsed.items() if len(values) > 1)
    if repeated:
        raise TokenRequestError(400, "invalid_request", f"parameter(s) repeated: {', '.join(repeated)}")
    return {key: values[0] for key, values in parsed.items()}


def check_grant(form: Mapping[str, str]) -> tuple[str, str]:
    """Validate the grant and return ``(client_id, client_secret)``; ``scope`` is ignored.

    Raises:
        TokenRequestError: missing parameters or a grant other than client_credentials.
    """
    grant_type = form.get("grant_type")
    if not grant_type:
        raise TokenRequestError(400, "invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        raise TokenRequestError(
            400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported; use client_credentials"
        )
    client_id = form.get("client_id")
    client_secret = form.get("client_secret")
    if not client_id or client_secret is None:
        raise TokenRequestError(400, "invalid_request", "client_id and client_secret are required")
    return client_id, client_secret


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


@dataclass
class _Grant:
    client_id: str
    expires_at: float


class TokenService:
    """Issues and checks opaque bearer tokens for a fixed set of clients."""

    def __init__(
        self,
        clients: Mapping[str, str],
        ttl_seconds: float,
        time_fn: Callable[[], float] = time.time,
        *,
        resource: str = "https://api.amili.no",
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
        self.clients = dict(clients)
        self.ttl_seconds = float(ttl_seconds)
        #: Real-time source for expiry; tests may swap it to jump past a token's lifetime.
        self.time_fn = time_fn
        self.resource = resource
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        self.issued = 0

    def issue(self, form: Mapping[str, str]) -> Response:
        """Answer a decoded token request: 200 with a new token, or the OAuth2 error."""
        try:
            client_id, client_secret = check_grant(form)
        except TokenRequestError as err:
            return err.response()
        expected = self.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected.encode(), client_secret.encode()):
            return oauth_error(401, "invalid_client", "Client authentication failed: unknown client or bad secret")
        now = self.time_fn()
        expires_at = now + self.ttl_seconds
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._prune(now)
            self._grants[token] = _Grant(client_id, expires_at)
            self.issued += 1
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "not_before": str(int(now)),
            # Rounded down, so a client trusting expires_in never outlives the real expiry.
            "expires_in": int(self.ttl_seconds),
            "expires_on": str(int(expires_at)),
            "resource": self.resource,
        }
        return json_response(200, body, _NO_STORE)

    def problem(self, authorization: str | None) -> str | None:
        """Why ``authorization`` is not a valid bearer token now, or None when it is."""
        if not authorization:
            return "Missing Authorization header"
        token = bearer_token(authorization)
        if token is None:
            return "Authorization must be 'Bearer <access token>'"
        with self._lock:
            grant = self._grants.get(token)
        if grant is None:
            return "The access token is not valid"
        if self.time_fn() >= grant.expires_at:
            return "The access token has expired"
        return None

    def check(self, authorization: str | None) -> bool:
        """True when ``authorization`` is "Bearer <token>" for an unexpired token of this service."""
        return self.problem(authorization) is None

    def expire_all(self) -> int:
        """Expire every token issued so far; return how many were still valid."""
        now = self.time_fn()
        with self._lock:
            live = [grant for grant in self._grants.values() if grant.expires_at > now]
            for grant in live:
                grant.expires_at = now
        return len(live)

    def active(self) -> int:
        """How many issued tokens are still valid."""
        now = self.time_fn()
        with self._lock:
            return sum(1 for grant in self._grants.values() if grant.expires_at > now)

    def _prune(self, now: float) -> None:
        stale = [token for token, grant in self._grants.items() if grant.expires_at + _GRACE_SECONDS < now]
        for token in stale:
            del self._grants[token]


@dataclass(frozen=True)
class _Member:
    provider: str
    service: TokenService
    faults: FaultPlan
    wait: Callable[[float], object]


class SharedTokenEndpoint:
    """The one ``POST /token`` route of a router, serving every registered ``TokenService``.

    The first provider to register on a router adds the route; later ones only add their
    service. A request goes to the service that knows its ``client_id``.
    """

    _by_router: ClassVar[weakref.WeakKeyDictionary[Router, SharedTokenEndpoint]] = weakref.WeakKeyDictionary()
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: list[_Member] = []

    @classmethod
    def register(
        cls,
        router: Router,
        provider: str,
        service: TokenService,
        faults: FaultPlan,
        wait: Callable[[float], object],
    ) -> SharedTokenEndpoint:
        """Serve ``service``'s clients on ``router``'s ``POST /token``, adding the route if needed.

        Raises:
            ValueError: a client id is already served by another provider on this router.
        """
        with cls._registry_lock:
            endpoint = cls._by_router.get(router)
            if endpoint is None:
                endpoint = cls()
                cls._by_router[router] = endpoint
                router.add("POST", TOKEN_PATH, endpoint.handle, label=TOKEN_LABEL)
        endpoint._add(_Member(provider, service, faults, wait))
        return endpoint

    def providers(self) -> list[str]:
        """Names of the providers whose clients this endpoint serves."""
        with self._lock:
            return [member.provider for member in self._members]

    def handle(self, request: Request) -> Response:
        """Route handler for ``POST /token``."""
        try:
            form = parse_form(request)
            client_id, _ = check_grant(form)
        except TokenRequestError as err:
            return err.response()
        member = self._member_for(client_id)
        if member is None:
            return oauth_error(401, "invalid_client", "Client authentication failed: unknown client or bad secret")
        fault = self._take_token_fault(member)
        if fault is not None:
            faulted = render_fault(
                fault, normal=lambda: member.service.issue(form), error=_token_fault_error, wait=member.wait
            )
            if faulted is not None:
                return faulted
        return member.service.issue(form)

    def _add(self, member: _Member) -> None:
        with self._lock:
            for other in self._members:
                shared = set(other.service.clients) & set(member.service.clients)
                if shared:
                    raise ValueError(
                        f"client id(s) {', '.join(sorted(shared))} of {member.provider} "
                        f"already belong to {other.provider}"
                    )
            self._members.append(member)

    def _member_for(self, client_id: str) -> _Member | None:
        with self._lock:
            return next((m for m in self._members if client_id in m.service.clients), None)

    @staticmethod
    def _take_token_fault(member: _Member) -> Fault | None:
        # Unscoped faults are meant for the status endpoints; only a fault armed with
        # ref="token" may break the token call.
        return member.faults.take_scoped(member.provider, TOKEN_FAULT_REF)


_TOKEN_FAULT_ERRORS: dict[int, tuple[str, str]] = {
    401: ("invalid_client", "Client authentication failed: unknown client or bad secret"),
    404: ("invalid_request", "Not found"),
    429: ("temporarily_unavailable", "Too many requests, retry later"),
}


_token_fault_error = error_from(_TOKEN_FAULT_ERRORS, oauth_error)


class TokenClientFake(FakeProvider[ItemT]):
    """A fake whose API takes bearer tokens of one client from the shared ``POST /token``."""

    #: Where its tokens are good (the ``resource`` of a token answer).
    resource: ClassVar[str]
    #: ``(client_id, client_secret)`` unless options ``<name>_client_id`` / ``_client_secret`` say otherwise.
    default_client: ClassVar[tuple[str, str]]

    def _configure(self, config: SimulatorConfig) -> None:
        self.client_id = str(self.options.get(f"{self.name}_client_id", self.default_client[0]))
        self.client_secret = str(self.options.get(f"{self.name}_client_secret", self.default_client[1]))
        self.token_service = TokenService(
            {self.client_id: self.client_secret}, config.token_ttl_seconds, resource=self.resource
        )

    @property
    def tokens_issued(self) -> int:
        """How many access tokens this fake's client has obtained."""
        return self.token_service.issued

    def expire_tokens(self) -> int:
        """Expire every token issued so far (next API call with one gets 401); return how many."""
        return self.token_service.expire_all()

    def env(self, base_url: str) -> dict[str, str]:
        """The poller settings that point it at this fake (the token URL is ``{AUTH_URL}/token``)."""
        prefix = f"POLLER_{self.name.upper()}__"
        return {
            f"{prefix}BASE_URL": base_url,
            f"{prefix}AUTH_URL": base_url,
            f"{prefix}CLIENT_ID": self.client_id,
            f"{prefix}CLIENT_SECRET": self.client_secret,
        }

    def _token_line(self) -> str:
        """A line of ``describe_lines`` about the token client."""
        return f"  token: POST /token client_id={self.client_id} ({self.tokens_issued} issued)"

    def register(self, router: Router) -> None:
        """Add the shared ``POST /token``, the API routes and the admin routes (``tokens`` too)."""
        SharedTokenEndpoint.register(router, self.name, self.token_service, self.faults, self._wait)
        super().register(router)
        self._admin_route(router, "GET", "tokens", self._admin_tokens)

    def _admin_tokens(self, request: Request) -> Response:
        return json_response(200, {"tokens_issued": self.tokens_issued, "active": self.token_service.active()})


def challenge(authorization: str | None) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750 section 3: the error only when a token came)."""
    return {"WWW-Authenticate": 'Bearer error="invalid_token"' if bearer_token(authorization) else "Bearer"}
