"""Build the application objects from Settings. One place, so tasks and CLI agree."""

from __future__ import annotations

import os

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.registry import REGISTRY, ProviderSet
from worker.service import PollerService
from worker.store.credentials import DbCredentialStore
from worker.store.db import make_engine, make_sessionmaker

_engines: dict[tuple[int, str], Engine] = {}


def engine_for(settings: Settings) -> Engine:
    """One engine per process and URL: pooled connections must not cross a fork."""
    key = (os.getpid(), settings.resolved_database_url())
    if key not in _engines:
        _engines[key] = make_engine(key[1])
    return _engines[key]


def sessions_for(settings: Settings) -> sessionmaker[Session]:
    """A session factory on the process's engine."""
    return make_sessionmaker(engine_for(settings))


def policy_for(settings: Settings) -> PollPolicy:
    """Scheduling tunables from settings."""
    return PollPolicy(backoff_base_s=settings.backoff_base_seconds,
                      backoff_max_s=settings.backoff_max_seconds,
                      jitter_ratio=settings.jitter_ratio, failing_after=settings.failing_after)


def build_service(settings: Settings) -> PollerService:
    """The poller service with providers configured from settings."""
    sessions = sessions_for(settings)
    ctx = ProviderContext(
        http=HttpOptions(timeout_s=settings.http_timeout_seconds, max_body_bytes=settings.max_body_bytes),
        credentials=DbCredentialStore(sessions),
    )
    providers = ProviderSet({name: getattr(settings, name) for name in REGISTRY}, ctx)
    return PollerService(sessions, providers, policy_for(settings))
