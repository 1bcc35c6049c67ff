"""The database implementation of worker.credentials.CredentialStore.

Every method is one short transaction; the lock is a lease on the row (``locked_until``), so no
transaction stays open across the provider's token call. The tokens are encrypted at rest by
their column type (worker.store.crypto.EncryptedText): this module handles plain values.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.clock import utcnow
from worker.credentials import StoredCredential
from worker.store.models import Credential


class DbCredentialStore:
    """Rotating credentials in the poller's own database, shared by every worker."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def seed(self, key: str, refresh_token: str, fingerprint: str, now: datetime) -> None:
        """Insert, or replace when the configured token changed (an operator re-authorized)."""
        with self.sessions.begin() as s:
            row = s.get(Credential, key, with_for_update=True)
            if row is None:
                s.add(Credential(key=key, refresh_token=refresh_token, seed_fingerprint=fingerprint, updated_at=now))
            elif row.seed_fingerprint != fingerprint:
                row.refresh_token, row.seed_fingerprint = refresh_token, fingerprint
                row.access_token = row.access_expires_at = row.access_issued_at = None
                row.updated_at = now

    def load(self, key: str) -> StoredCredential | None:
        """The stored row as a value."""
        with self.sessions.begin() as s:
            row = s.get(Credential, key)
            if row is None:
                return None
            return StoredCredential(row.key, row.refresh_token, row.access_token, row.access_expires_at,
                                    row.access_issued_at, row.seed_fingerprint)

    def try_lock(self, key: str, now: datetime, ttl_s: float) -> bool:
        """Compare-and-set on ``locked_until``: exactly one caller wins while the lease runs."""
        with self.sessions.begin() as s:
            won = s.execute(
                update(Credential)
                .where(Credential.key == key,
                       or_(Credential.locked_until.is_(None), Credential.locked_until < now))
                .values(locked_until=now + timedelta(seconds=ttl_s)).returning(Credential.key)
                .execution_options(synchronize_session=False)).scalar_one_or_none()
            return won is not None

    def save(self, key: str, *, refresh_token: str, access_token: str, expires_at: datetime,
             issued_at: datetime) -> None:
        """Store the new refresh and access tokens and release the lock, atomically."""
        with self.sessions.begin() as s:
            s.execute(update(Credential).where(Credential.key == key).values(
                refresh_token=refresh_token, access_token=access_token, access_expires_at=expires_at,
                access_issued_at=issued_at, locked_until=None, updated_at=utcnow(),
            ).execution_options(synchronize_session=False))

    def unlock(self, key: str) -> None:
        """Release the lock (the refresh failed)."""
        with self.sessions.begin() as s:
            s.execute(update(Credential).where(Credential.key == key).values(locked_until=None)
                      .execution_options(synchronize_session=False))

    def keys(self) -> list[str]:
        """Every stored key (for operators)."""
        with self.sessions.begin() as s:
            return list(s.scalars(select(Credential.key)))
