"""API keys: made once and shown once, stored as a SHA-256 digest, checked on every request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.clock import utcnow
from worker.errors import InputError, NotFound
from worker.store.models import ApiKey

#: Every key starts with this, so a leaked one is recognisable (secret scanners, logs).
PREFIX = "spk_"
#: `last_used_at` is written at most this often per key: a busy client must not write per request.
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id and name, and whether it may write."""

    key_id: int
    name: str
    read_only: bool


def digest(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Create, list, revoke and check API keys."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime] = utcnow,
                 reads: sessionmaker[Session] | None = None) -> None:
        self.sessions, self.clock = sessions, clock
        #: The check on every request only reads; read-only sessions take no write lock.
        self.reads = reads or sessions

    def create(self, name: str, *, read_only: bool = False) -> tuple[ApiKey, str]:
        """A new key and its row; the key itself is returned only here."""
        name = name.strip()
        if not 1 <= len(name) <= 80:
            raise InputError("a key's name must be 1 to 80 characters", field="name")
        key = PREFIX + secrets.token_urlsafe(32)
        with self.sessions.begin() as session:
            row = ApiKey(name=name, prefix=key[:len(PREFIX) + 6], digest=digest(key), read_only=read_only,
                         created_at=self.clock())
            session.add(row)
            session.flush()
            return row, key

    def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, by id."""
        with self.sessions.begin() as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))

    def revoke(self, ref: str) -> ApiKey:
        """Revoke a key by id or name (a name must name one live key). Takes effect at once."""
        with self.sessions.begin() as session:
            q = select(ApiKey).where(ApiKey.revoked_at.is_(None))
            q = q.where(ApiKey.id == int(ref)) if ref.isdigit() else q.where(ApiKey.name == ref)
            rows = list(session.scalars(q))
            if not rows:
                raise NotFound(f"no live API key has id or name {ref!r} (`poller keys list`)")
            if len(rows) > 1:
                raise InputError(f"{len(rows)} live keys are named {ref!r}; revoke one by id")
            rows[0].revoked_at = self.clock()
            return rows[0]

    def check(self, key: str) -> Caller | None:
        """The caller a presented key belongs to, or None (unknown or revoked)."""
        if not key.startswith(PREFIX):
            return None
        wanted = digest(key)
        with self.reads.begin() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.digest == wanted))
        # The lookup is by digest; compared again in constant time for good measure.
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.digest, wanted):
            return None
        now = self.clock()
        if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
            # Its own short write, at most once a minute per key: a read never turns into a write.
            with self.sessions.begin() as session:
                session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
        return Caller(row.id, row.name, row.read_only)
