"""What every provider adapter is, and the HTTP plumbing they share.

requests exceptions are translated into the project's errors here and only here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import urlencode

import requests
import urllib3

from worker.backoff import parse_retry_after
from worker.clock import utcnow
from worker.documents import NotStrictJSON, loads_strict
from worker.domain import ItemRef, StatusDocument
from worker.errors import ItemGone, ProviderResponseInvalid, ProviderUnavailable
from worker.http_transport import Call, DirectResponse, deadline, direct_request, new_session

#: How much of a response body goes into an error message.
EXCERPT_CHARS = 200


@dataclass(frozen=True)
class Fetched:
    """What a fetch brought back.

    Attributes:
        raw: the parsed body (kept verbatim in the snapshot).
        version: the provider's own change marker (an ETag), when it has one.
        not_modified: the provider said nothing changed since ``version`` (HTTP 304).
    """

    raw: Any = None
    version: str | None = None
    not_modified: bool = False


class Provider(Protocol):
    """A provider adapter: knows one API's paths, auth and response shape."""

    name: ClassVar[str]
    #: The resources it can poll; the first is the default ``--kind``.
    kinds: ClassVar[tuple[str, ...]]
    #: This account's settings (``rate_limit_per_second`` and friends are read by the shell).
    settings: Any
    account: str

    def validate_ref(self, kind: str, ref: str) -> str:
        """Check a reference at track time; return it canonicalized or raise InputError."""
        ...

    def fetch(self, item: ItemRef, version: str | None) -> Fetched:
        """Ask the provider for the item's status. ``version``: the change marker of the last
        successful poll (``Fetched.version``), for a conditional request; None when there is none."""
        ...

    def normalize(self, raw: Any, item: ItemRef) -> StatusDocument:
        """Pure: turn a parsed body into a StatusDocument or raise ProviderResponseInvalid."""
        ...


@dataclass(frozen=True)
class HttpOptions:
    """HTTP behaviour shared by all adapters."""

    timeout_s: float = 10.0
    max_body_bytes: int = 1_000_000
    user_agent: str = "status-poller/0.1"
    #: Connections kept alive per provider host: as many as polls may be in flight at once.
    pool_size: int = 10
    #: Whether requests reads proxy and CA-bundle variables and ~/.netrc on each call (see
    #: new_session); only a proxy needs it (config.wiring.http_environment decides).
    trust_env: bool = False
    #: The CA bundle to verify with, when trust_env is off (None: certifi's).
    ca_bundle: str | None = None


@dataclass(frozen=True)
class ProviderContext:
    """What adapters get from the shell besides their own settings.

    Attributes:
        http: shared HTTP behaviour.
        clock: wall clock (token expiry, Retry-After dates, JWT ``exp``).
        credentials: durable store for credentials that rotate (Billit's refresh token).
    """

    http: HttpOptions = HttpOptions()
    clock: Callable[[], datetime] = field(default_factory=lambda: utcnow)
    credentials: Any = None


def _encode_body(json_body: Any, data: Mapping[str, str] | None) -> tuple[bytes | None, dict[str, str]]:
    """A request body and its Content-Type, encoded as requests would (JSON without NaN, or a form)."""
    if json_body is not None:
        return json.dumps(json_body, allow_nan=False).encode(), {"Content-Type": "application/json"}
    if data is not None:
        return urlencode(data).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    return None, {}


def _kind(err: Exception) -> str:
    """An error's name, with urllib3's connection failures named as requests names them."""
    if isinstance(err, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError):
        return "ConnectionError"
    return type(err).__name__


class HttpClient:
    """A keep-alive ``requests.Session`` with a total deadline on every call and error translation.

    Args:
        provider: the provider name, used in errors.
        base_url: scheme, host and optional path prefix.
        options: timeout and size cap.
        session: an injected session (tests, or sharing a pool); a new one by default.
        clock: returns "now" for Retry-After dates.
        describe_error: turns a provider's JSON error body into a short message.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        options: HttpOptions = HttpOptions(),
        *,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] = utcnow,
        describe_error: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.options = options
        # Our transport's session: its calls honour the total deadline (see worker.http_transport).
        self.session = session or new_session(
            pool_maxsize=options.pool_size, trust_env=options.trust_env, ca_bundle=options.ca_bundle)
        # Our own session with nothing to choose per call (no proxies from the environment):
        # straight to its connection pools, without requests' per-call work.
        self._direct = session is None and not options.trust_env
        self.session.headers.setdefault("User-Agent", options.user_agent)
        self.clock = clock
        self.describe_error = describe_error or (lambda body: None)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        not_found_is_gone: bool = True,
        allow_empty: bool = False,
    ) -> tuple[int, Any]:
        """Send one request and return ``(status_code, parsed JSON body)`` for a 2xx or 304 answer.

        A 304 (after a conditional request) returns ``(304, None)``; so does an empty 2xx body
        when ``allow_empty``.

        Raises:
            ProviderUnavailable: timeout, connection error, 5xx or 429 (with ``retry_after``).
            ItemGone: 404, when ``not_found_is_gone``.
            ProviderResponseInvalid: any other non-2xx, a body over the size cap, or non-JSON.
        """
        url = f"{self.base_url}{path}"
        limit = self.options.timeout_s
        # One deadline for connect, headers and body: a peer trickling bytes cannot hold a worker.
        with deadline(limit) as call:
            try:
                resp: requests.Response | DirectResponse | None = None
                if self._direct:
                    body_bytes, extra = _encode_body(json_body, data)
                    query = urlencode([(k, v) for k, vs in (params or {}).items()
                                       for v in (vs if isinstance(vs, list | tuple) else [vs]) if v is not None])
                    resp = direct_request(self.session, method, f"{url}?{query}" if query else url,
                                          headers={**extra, **(headers or {})}, body=body_bytes,
                                          timeout=call.remaining())
                if resp is None:
                    resp = self.session.request(
                        method, url, headers=dict(headers or {}), params=params, json=json_body, data=data,
                        timeout=call.remaining(), stream=True, allow_redirects=False,
                    )
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
                raise self._transport_error(call, err, method, path) from err
            with resp:
                body = self._read_capped(resp, method, path, call)
        if resp.status_code == 304:
            return 304, None
        return resp.status_code, self._interpret(resp, body, method, path, not_found_is_gone, allow_empty)

    def _transport_error(self, call: Call, err: Exception, method: str, path: str,
                         status_code: int | None = None) -> ProviderUnavailable:
        """The retryable error for a call that timed out, was cut off at its deadline or failed."""
        if call.expired or isinstance(err, requests.Timeout | urllib3.exceptions.TimeoutError):
            # A single read's timeout is what was left of the deadline: the same expiry either way.
            what = f"{method} {path} timed out after {self.options.timeout_s:g}s (exceeded its total deadline)"
        elif status_code is not None:
            # A body that stalls or breaks mid-way is a transport failure, like a timeout.
            what = f"{method} {path}: reading the response failed: {_kind(err)}"
        else:
            what = f"{method} {path} failed: {_kind(err)}"
        return ProviderUnavailable(what, provider=self.provider, status_code=status_code)

    def _read_capped(self, resp: requests.Response | DirectResponse, method: str, path: str, call: Call) -> bytes:
        limit = self.options.max_body_bytes
        declared = resp.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            # Refused before reading a byte: a 2 GB promise followed by a stall would otherwise hold
            # the call until its deadline.
            raise ProviderResponseInvalid(
                f"{method} {path}: response body larger than {limit} bytes (Content-Length {int(declared)})",
                provider=self.provider, status_code=resp.status_code)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > limit:
                    raise ProviderResponseInvalid(
                        f"{method} {path}: response body larger than {limit} bytes",
                        provider=self.provider, status_code=resp.status_code,
                    )
                chunks.append(chunk)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            raise self._transport_error(call, err, method, path, resp.status_code) from err
        if call.expired:
            # A body without a length ends at EOF, and a socket cut at the deadline looks like one.
            raise self._transport_error(call, TimeoutError(), method, path, resp.status_code)
        return b"".join(chunks)

    def _interpret(
        self, resp: requests.Response | DirectResponse, body: bytes, method: str, path: str, not_found_is_gone: bool,
        allow_empty: bool,
    ) -> Any:
        status = resp.status_code
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            # JSON is UTF-8 (RFC 8259): a replacement character stored would be a status nobody sent.
            if 200 <= status < 300:
                raise ProviderResponseInvalid(
                    f"{method} {path} answered {status} with a body that is not UTF-8 (invalid byte at "
                    f"offset {err.start})", provider=self.provider, status_code=status,
                    body_excerpt=body[:EXCERPT_CHARS].decode("utf-8", errors="replace")) from None
            text = body.decode("utf-8", errors="replace")  # an error page: readable is enough
        parsed: Any = None
        parse_error: str | None = None
        try:
            parsed = loads_strict(text) if text.strip() else None
        except NotStrictJSON as err:
            if 200 <= status < 300:
                # The provider sent JSON we must not store or pass on (NaN, 1e999, absurd nesting).
                raise ProviderResponseInvalid(f"{method} {path} answered {status} with a body that is not "
                                              f"strict JSON: {err}", provider=self.provider,
                                              status_code=status) from None
            parse_error = str(err)
        except ValueError as err:
            parse_error = f"{err.msg} at line {err.lineno} column {err.colno}" if isinstance(
                err, json.JSONDecodeError) else str(err)
        excerpt = text[:EXCERPT_CHARS]
        described = self.describe_error(parsed) if parsed is not None and status >= 300 else None
        what = f"{method} {path} answered {status}" + (f": {described}" if described else "")
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), now=self.clock())
            raise ProviderUnavailable(what, provider=self.provider, status_code=status,
                                      body_excerpt=None if described else excerpt,
                                      retry_after=retry_after)
        if status == 404 and not_found_is_gone:
            raise ItemGone(what, provider=self.provider, status_code=status,
                           body_excerpt=None if described else excerpt)
        if status >= 300 or status < 200:
            raise ProviderResponseInvalid(what, provider=self.provider, status_code=status,
                                          body_excerpt=None if described else excerpt)
        if parse_error is None and parsed is None and allow_empty:
            return None
        if parse_error is not None or parsed is None:
            ctype = resp.headers.get("Content-Type", "no Content-Type")
            reason = parse_error or "empty body"
            raise ProviderResponseInvalid(
                f"{method} {path} answered {status} with a body that is not JSON ({ctype}; {reason})",
                provider=self.provider, status_code=status, body_excerpt=excerpt,
            )
        return parsed
