"""Access tokens (``worker.credentials.Token``): cached until shortly before they expire, refreshed once on a 401.

Never a token request per poll: an adapter keeps one ``CachedToken`` per account for the life of
the worker process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from worker.credentials import Token
from worker.dates import parse_http_date, parse_iso
from worker.errors import ProviderError, ProviderResponseInvalid
from worker.providers.base import HttpClient

T = TypeVar("T")


class CachedToken:
    """A thread-safe cache around a token-fetching function."""

    def __init__(self, fetch: Callable[[str | None], Token], clock: Callable[[], datetime]) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Token | None = None
        #: How many tokens this cache fetched (tests assert reuse).
        self.fetches = 0

    def get(self, *, stale: str | None = None) -> str:
        """The current token; a new one if it is about to expire or equals ``stale`` (got a 401)."""
        with self._lock:
            token = self._token
            if token is None or not token.usable(self._clock()) or token.value == stale:
                token = self._token = self._fetch(stale)
                self.fetches += 1
            return token.value

    def clear(self) -> None:
        """Forget the cached token."""
        with self._lock:
            self._token = None


def with_token(tokens: CachedToken, call: Callable[[str], T]) -> T:
    """Run ``call(token)``; on a 401, fetch a fresh token and retry exactly once."""
    token = tokens.get()
    try:
        return call(token)
    except ProviderError as err:
        if err.status_code != 401:
            raise
    return call(tokens.get(stale=token))


def parse_time(value: Any) -> datetime | None:
    """An expiry given as epoch seconds (number or digits), ISO 8601 or an RFC 1123 date."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().isdigit()):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_iso(text)
        except ValueError:
            return parse_http_date(text)
    return None


def token_from_response(
    body: Any, *, now: datetime, provider: str, default_lifetime_s: float = 3600.0,
    token_keys: tuple[str, ...] = ("access_token",),
) -> Token:
    """Build a Token from a token endpoint's JSON.

    Expiry comes from ``expires_on`` / ``expires_at`` / ``expires`` (absolute) or ``expires_in``
    (relative), whichever the provider sends, else ``default_lifetime_s``.
    """
    if isinstance(body, str) and body:
        return Token(body, now + timedelta(seconds=default_lifetime_s), now)
    if not isinstance(body, dict):
        raise ProviderResponseInvalid("token response is not a JSON object", provider=provider)
    value = next((body[k] for k in token_keys if isinstance(body.get(k), str) and body[k]), None)
    if value is None:
        raise ProviderResponseInvalid(
            f"token response has none of {', '.join(token_keys)}", provider=provider)
    expires = None
    for key in ("expires_on", "expires_at", "expires"):
        expires = parse_time(body.get(key))
        if expires:
            break
    if expires is None:
        seconds = body.get("expires_in")
        try:
            lifetime = float(seconds) if seconds is not None else default_lifetime_s
        except (TypeError, ValueError):
            lifetime = default_lifetime_s
        expires = now + timedelta(seconds=lifetime)
    return Token(value, expires, now)


def client_credentials_token(
    auth: HttpClient, *, client_id: str, client_secret: str, scope: str | None, now: datetime,
    path: str = "/token",
) -> Token:
    """OAuth2 client credentials: ``POST {auth}/token``, form-encoded, as Amili's Identiverse expects."""
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    if scope:
        form["scope"] = scope
    _, body = auth.request_json("POST", path, data=form, not_found_is_gone=False)
    return token_from_response(body, now=now, provider=auth.provider)
