"""The Amili Sweden (ADA) login: a JWT signed with the client's registered key, traded for an access token.

Follows https://docs.amili.se/reference/common/authentication: the client signs a short-lived JWT
``{"api_code", "exp"}`` with its registered private key, trades it at ``GET /authenticates/api-code``
(header ``X-API-Key``) for an opaque access token, then sends that token in ``X-API-Key`` on every
call. Where the docs are silent (PROVIDERS.md [U]): the login answers 200
``{"token": ..., "expires": "<RFC 1123>"}``; the token lives ``token_ttl_seconds`` of real wall time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulator.eve import eve_error, rfc1123
from simulator.router import Request, Response, json_response

#: The signing algorithms the test docs list for the login JWT.
ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512")
#: The algorithm of the key pair generated when no public key is configured (P-521).
GENERATED_ALGORITHM = "ES512"
DEFAULT_API_CODE = "sim-ada-api-code"
#: The docs ask for ``exp`` about 10 minutes ahead; further than this is refused.
MAX_JWT_LIFETIME = 15 * 60
PRIVATE_KEY_FILENAME = "amili_ada_private_key.pem"


class AdaLogin:
    """The registered key, the api code, and the access tokens issued against them.

    ``wall_time`` (default ``time.time``) is the real clock used for JWT ``exp`` checks and
    access-token expiry; tests may replace it to jump past a token's lifetime without sleeping.
    """

    def __init__(self, options: dict[str, Any], token_ttl_seconds: float) -> None:
        self.api_code = str(options.get("amili_ada_api_code", DEFAULT_API_CODE))
        self.token_ttl_seconds = float(token_ttl_seconds)
        self.wall_time: Callable[[], float] = time.time
        self.tokens_issued = 0
        self._lock = threading.Lock()
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

    def _write_private_key(self, key_dir: str | os.PathLike[str] | None) -> str:
        """Write the generated key where the poller (maybe another process) can read it."""
        if key_dir:
            directory = os.fspath(key_dir)
            os.makedirs(directory, exist_ok=True)
        else:
            directory = tempfile.mkdtemp(prefix="sim-amili-ada-")
            # Our own temp dir goes when the login does (or at exit); a caller's dir is left alone.
            weakref.finalize(self, shutil.rmtree, directory, True)
        path = os.path.join(directory, PRIVATE_KEY_FILENAME)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(self.private_key_pem or "")
        return path

    def keys(self) -> dict[str, Any]:
        """The api code and key material, as the admin API shows them."""
        return {
            "api_code": self.api_code,
            "algorithm": self.algorithm,
            "public_key_pem": self.public_key_pem,
            "private_key_pem": self.private_key_pem,
            "private_key_path": self.private_key_path,
        }

    def make_login_jwt(self, api_code: str | None = None, lifetime: float = 600.0) -> str:
        """Sign the login JWT a client would send (needs the generated private key)."""
        if self.private_key_pem is None or self.algorithm is None:
            raise RuntimeError("no private key: the public key was configured via amili_ada_public_key_pem")
        claims = {
            "api_code": self.api_code if api_code is None else api_code,
            "exp": int(self.wall_time() + lifetime),
        }
        return jwt.encode(claims, self.private_key_pem, algorithm=self.algorithm)

    def expire_all(self) -> int:
        """Make every access token issued so far expired; return how many were live."""
        now = self.wall_time()
        with self._lock:
            live = sum(1 for expiry in self._tokens.values() if expiry > now)
            self._tokens = dict.fromkeys(self._tokens, 0.0)
        return live

    @staticmethod
    def preview() -> Response:
        """A would-be login answer (not stored), for the "malformed" fault to cut in half."""
        return json_response(200, {"token": secrets.token_urlsafe(32), "expires": rfc1123(datetime.now(UTC))})

    def verify(self, signed: str) -> Response | None:
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

    def issue(self) -> Response:
        """A new access token: ``{"token", "expires"}``."""
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

    def check(self, request: Request) -> Response | None:
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
