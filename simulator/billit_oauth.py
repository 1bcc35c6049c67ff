"""Billit's OAuth2 token service (Authorization Code flow, single-use rotating refresh tokens) and
its ``POST /OAuth2/token`` answers, for the Billit fake when option ``billit_oauth`` is on."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from simulator.billit_order import error_response
from simulator.fake import error_from
from simulator.router import Response, json_response

# OAuth2 defaults, overridable through SimulatorConfig.options.
DEFAULT_CLIENT_ID = "sim-billit-client"
DEFAULT_CLIENT_SECRET = "sim-billit-secret"
DEFAULT_REFRESH_TOKEN = "sim-billit-refresh-0"
DEFAULT_AUTH_CODE = "sim-billit-code"
GRANT_TYPES = ("authorization_code", "refresh_token")
# The fault ref that aims a fault at the token endpoint instead of the orders.
TOKEN_FAULT_REF = "token"


ACCESS_TOKEN_ERRORS: dict[str, str] = {
    "InvalidAccessToken": "The access token is not valid",
    "AccessTokenExpired": "The access token has expired",
    "AccessTokenRevoked": "The access token has been revoked",
}


def token_request_problem(data: dict[str, Any]) -> str | None:
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


def truthy(value: object) -> bool:
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
        #: The only refresh token that works right now.
        self.current_refresh_token = refresh_token
        self._auth_code = auth_code
        # Counters read by tests; written under the lock, read without it (an int read is atomic).
        #: Access tokens issued so far, by either grant.
        self.tokens_issued = 0
        #: Refresh tokens issued so far (not counting the configured initial one).
        self.refresh_tokens_issued = 0
        #: ``refresh_token`` grants that succeeded, and those refused (the token was spent or unknown).
        self.refreshes_ok = 0
        self.refreshes_rejected = 0

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
            if not secrets.compare_digest(refresh_token, self.current_refresh_token):
                self.refreshes_rejected += 1
                return None
            self.refreshes_ok += 1
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
                "current_refresh_token": self.current_refresh_token,
                "tokens_issued": self.tokens_issued,
                "access_tokens_live": live,
                "refresh_tokens_issued": self.refresh_tokens_issued,
                "refreshes_ok": self.refreshes_ok,
                "refreshes_rejected": self.refreshes_rejected,
            }

    def _issue_locked(self) -> dict[str, Any]:
        # The serial keeps tokens readable in logs; the random part keeps them from
        # being guessable or valid in a later simulator run.
        self.tokens_issued += 1
        self.refresh_tokens_issued += 1
        access_token = f"sim-billit-access-{self.tokens_issued}-{secrets.token_hex(8)}"
        refresh_token = f"sim-billit-refresh-{self.refresh_tokens_issued}-{secrets.token_hex(8)}"
        self._access[access_token] = _AccessToken(expires_at=self.wall_time() + self.token_ttl_seconds)
        self.current_refresh_token = refresh_token
        return self._token_body(access_token, refresh_token)

    def _token_body(self, access_token: str, refresh_token: str) -> dict[str, Any]:
        return {
            "token_type": "Bearer",
            "expires_in": int(self.token_ttl_seconds),
            "access_token": access_token,
            "refresh_token": refresh_token,
        }


def grant(oauth: BillitOAuth, data: dict[str, Any]) -> Response:
    """Answer a checked token request: the grant's new tokens, or 400 for a spent code or token."""
    if data["grant_type"] == "authorization_code":
        body = oauth.redeem_code(data["code"])
        if body is None:
            return error_response(
                400, "InvalidAuthorizationCode", "The authorization code is unknown or was already used"
            )
    else:
        body = oauth.refresh(data["refresh_token"])
        if body is None:
            return error_response(400, "InvalidRefreshToken", "The refresh token is unknown or was already used")
    # RFC 6749 5.1: token responses must not be cached.
    return json_response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})


#: Billit's error body for a fault on the token endpoint: status -> (Code, Description).
TOKEN_FAULT_ERRORS: dict[int, tuple[str, str]] = {
    401: ("InvalidClient", "Unknown client_id or wrong client_secret"),
    404: ("NotFound", "Not found"),
    429: ("TooManyRequests", "Too many requests, retry later"),
}


#: What a fault on the token endpoint answers with a status.
token_fault_error = error_from(TOKEN_FAULT_ERRORS, error_response)


def oauth_from_options(options: dict[str, Any], token_ttl_seconds: float) -> BillitOAuth:
    """The token service the ``billit_*`` simulator options describe."""
    auth_code = options.get("billit_auth_code", DEFAULT_AUTH_CODE)
    return BillitOAuth(
        client_id=str(options.get("billit_client_id", DEFAULT_CLIENT_ID)),
        client_secret=str(options.get("billit_client_secret", DEFAULT_CLIENT_SECRET)),
        refresh_token=str(options.get("billit_refresh_token", DEFAULT_REFRESH_TOKEN)),
        # None means "no authorization pending": the code grant then always fails.
        auth_code=None if auth_code is None else str(auth_code),
        token_ttl_seconds=token_ttl_seconds,
    )
