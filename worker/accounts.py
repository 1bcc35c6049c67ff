"""Events about a provider account rather than an item: breaker openings and credential failures.

A revoked key fails every item of an account at once; one ``provider.auth_failed`` per account
(not one ``poll.failing`` per item only) tells the operator what to fix. Whether it was already
said is kept in ``provider_accounts``, so every worker process agrees it was said once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from worker import metrics
from worker.errors import ProviderError
from worker.guard import Transition
from worker.ids import event_ids
from worker.store import repo
from worker.store.db import insert_for
from worker.store.models import ProviderAccount

log = structlog.get_logger(__name__)

#: After a success, how often (seconds, per process and account) to check for a flag to clear:
#: a success is the common case, and must not cost a database round trip each time.
RECOVERY_CHECK_S = 30.0


class AccountEvents:
    """Writes provider-level events through the outbox, each exactly once.

    Args:
        sessions: the poller database.
        clock: wall clock (UTC).
        entropy: random bytes for event ids.
        monotonic: for spacing the recovery checks.
    """

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime],
                 entropy: Callable[[int], bytes] = os.urandom,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.sessions, self.clock, self.entropy, self.monotonic = sessions, clock, entropy, monotonic
        self._checked: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def _event(self, session: Session, etype: str, data: dict[str, Any], now: datetime) -> None:
        repo.add_system_event(session, event_ids(now, self.entropy(10), 1)[0], etype, data, now=now)
        metrics.events([etype])

    def breaker_event(self, provider: str, account: str, transition: Transition,
                      error: ProviderError | None) -> None:
        """Log a breaker transition and write it to the event table (once: Redis decided it atomically)."""
        until = (datetime.fromtimestamp(transition.until_ms / 1000, UTC).isoformat()
                 if transition.until_ms else None)
        data = {"provider": provider, "account": account, "failures": transition.failures,
                "calls": transition.calls, "paused_until": until, "error": str(error) if error else None}
        if transition.kind == "reopened":
            log.warning("provider.still_failing", **data)
            return
        etype = "provider.paused" if transition.kind == "opened" else "provider.resumed"
        with self.sessions.begin() as session:
            self._event(session, etype, data, self.clock())
        if transition.kind == "opened":
            metrics.provider_paused(provider)
        (log.error if transition.kind == "opened" else log.warning)(etype, **data)

    def auth_failed(self, provider: str, account: str, error: ProviderError) -> bool:
        """Record a credential or settings failure; the first one since the account last worked
        raises ``provider.auth_failed``. Returns whether this call raised it."""
        now = self.clock()
        data = {"provider": provider, "account": account, "failures": 1, "calls": 1, "paused_until": None,
                "error": str(error)}
        with self.sessions.begin() as session:
            # Insert-or-nothing, then flip the flag only where it is not set: of any number of workers
            # meeting the refusal at once, exactly one gets a row back and raises the event.
            dialect_insert = insert_for(session)
            first = session.execute(
                dialect_insert(ProviderAccount).values(provider=provider, account=account, auth_failed_at=now,
                                                       auth_error=str(error)[:500], updated_at=now)
                .on_conflict_do_nothing().returning(ProviderAccount.provider)).first() is not None
            if not first:
                first = session.execute(
                    update(ProviderAccount).where(ProviderAccount.provider == provider,
                                                  ProviderAccount.account == account,
                                                  ProviderAccount.auth_failed_at.is_(None))
                    .values(auth_failed_at=now, auth_error=str(error)[:500], updated_at=now)
                    .returning(ProviderAccount.provider).execution_options(synchronize_session=False)).first() \
                    is not None
            if not first:
                return False
            self._event(session, "provider.auth_failed", data, now)
        with self._lock:
            self._checked.pop((provider, account), None)
        log.error("provider.auth_failed", **data)
        return True

    def auth_ok(self, provider: str, account: str) -> bool:
        """A call of the account succeeded: clear its credential failure, if any, and raise
        ``provider.auth_recovered``. Checks the database at most every RECOVERY_CHECK_S."""
        key, tick = (provider, account), self.monotonic()
        with self._lock:
            last = self._checked.get(key)
            if last is not None and tick - last < RECOVERY_CHECK_S:
                return False
            self._checked[key] = tick
        now = self.clock()
        with self.sessions.begin() as session:
            failed = session.scalar(select(ProviderAccount.auth_failed_at).where(
                ProviderAccount.provider == provider, ProviderAccount.account == account))
            if failed is None:
                return False
            cleared = session.execute(
                update(ProviderAccount).where(ProviderAccount.provider == provider, ProviderAccount.account == account,
                                              ProviderAccount.auth_failed_at.is_not(None))
                .values(auth_failed_at=None, auth_error=None, updated_at=now).returning(ProviderAccount.provider)
                .execution_options(synchronize_session=False)).first()
            if cleared is None:
                return False
            data = {"provider": provider, "account": account, "failures": 0, "calls": 1, "paused_until": None,
                    "error": None}
            self._event(session, "provider.auth_recovered", data, now)
        log.warning("provider.auth_recovered", provider=provider, account=account)
        return True
