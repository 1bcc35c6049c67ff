"""Credentials that rotate and must survive restarts, shared by every worker.

Billit's OAuth2 refresh tokens are single-use and rotate on every refresh: the new one must be
stored before anything else happens, and two workers must never spend the same one. The store
is the database (``worker.store.credentials``); this module says what the adapters need of it
and implements the refresh protocol on top.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from worker.errors import ProviderUnavailable

#: Refresh this long before expiry at most (a token is dropped at 90% of its life otherwise).
MAX_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class Token:
    """A bearer credential and when it stops working."""

    value: str
    expires_at: datetime
    issued_at: datetime

    def usable(self, now: datetime) -> bool:
        """True until shortly before expiry: a token must not die in flight."""
        margin = min(MAX_MARGIN, (self.expires_at - self.issued_at) / 10)
        return now < self.expires_at - margin


@dataclass(frozen=True)
class StoredCredential:
    """One account's rotating credential as stored."""

    key: str
    refresh_token: str | None
    access_token: str | None
    access_expires_at: datetime | None
    access_issued_at: datetime | None
    seed_fingerprint: str | None


class CredentialStore(Protocol):
    """Durable, shared storage for rotating credentials."""

    def seed(self, key: str, refresh_token: str, fingerprint: str, now: datetime) -> None:
        """Insert the configured refresh token, or replace the stored one if the configured one changed."""

    def load(self, key: str) -> StoredCredential | None:
        """The stored credential, if any."""

    def try_lock(self, key: str, now: datetime, ttl_s: float) -> bool:
        """Take the refresh lock for ``ttl_s`` seconds unless someone holds it."""

    def save(self, key: str, *, refresh_token: str, access_token: str, expires_at: datetime,
             issued_at: datetime) -> None:
        """Store a refresh result and release the lock, in one transaction."""

    def unlock(self, key: str) -> None:
        """Release the refresh lock."""


def fingerprint(secret_value: str) -> str:
    """A short one-way digest, so the store can tell a new configured token from the old one."""
    return hashlib.sha256(secret_value.encode()).hexdigest()[:24]


class SharedRefresh:
    """The refresh protocol: one worker refreshes, the others wait for and reuse its result.

    Args:
        store: the credential store.
        key: the account's key in the store (``billit:default``).
        seed_token: the refresh token from settings; used when the store has none, or replaces
            the stored one when an operator configures a new one.
        refresh: spends a refresh token at the provider; returns ``(access Token, new refresh token)``.
        clock: wall clock.
        lock_ttl_s: how long a refresher may hold the lock (a crashed one frees it after this).
        wait: sleeps between checks while another worker refreshes.
    """

    def __init__(
        self, store: CredentialStore, key: str, seed_token: str,
        refresh: Callable[[str], tuple[Token, str]], clock: Callable[[], datetime],
        *, lock_ttl_s: float = 30.0, wait: Callable[[float], object] = time.sleep,
    ) -> None:
        self.store, self.key, self.refresh, self.clock = store, key, refresh, clock
        self.lock_ttl_s, self.wait = lock_ttl_s, wait
        self._seed = seed_token
        self._seeded = False
        #: Refreshes this process performed (tests assert only one worker refreshes).
        self.refreshes = 0

    def token(self, stale: str | None = None) -> Token:
        """A usable access token that is not ``stale`` (one the provider just rejected)."""
        if not self._seeded:
            self.store.seed(self.key, self._seed, fingerprint(self._seed), self.clock())
            self._seeded = True
        deadline = time.monotonic() + self.lock_ttl_s
        while True:
            found = self._usable(stale)
            if found:
                return found
            if self.store.try_lock(self.key, self.clock(), self.lock_ttl_s):
                try:
                    # Re-read under the lock: another worker may have refreshed since our check.
                    found = self._usable(stale)
                    if found:
                        self.store.unlock(self.key)
                        return found
                    current = self.store.load(self.key)
                    assert current is not None and current.refresh_token
                    access, new_refresh = self.refresh(current.refresh_token)
                    self.refreshes += 1
                    self.store.save(self.key, refresh_token=new_refresh, access_token=access.value,
                                    expires_at=access.expires_at, issued_at=access.issued_at)
                    return access
                except BaseException:
                    self.store.unlock(self.key)
                    raise
            if time.monotonic() > deadline:
                raise ProviderUnavailable("timed out waiting for another worker's token refresh",
                                          provider=self.key.split(":", 1)[0])
            self.wait(0.05)  # another worker is refreshing; its result lands in the store

    def _usable(self, stale: str | None) -> Token | None:
        cred = self.store.load(self.key)
        if cred is None or not cred.access_token or cred.access_expires_at is None:
            return None
        token = Token(cred.access_token, cred.access_expires_at, cred.access_issued_at or cred.access_expires_at)
        if token.value == stale or not token.usable(self.clock()):
            return None
        return token
