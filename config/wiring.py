"""Build the application objects from Settings. One place, so tasks and CLI agree."""

from __future__ import annotations

import os

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from worker.delivery import DeliveryPolicy, DeliveryService
from worker.guard import BreakerPolicy, RedisGuard
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.registry import REGISTRY, ProviderSet
from worker.service import PollerService
from worker.sinks.sql import SqlSink
from worker.store.credentials import DbCredentialStore
from worker.store.db import make_engine, make_sessionmaker
from worker.subscriptions import Subscriptions
from worker.webhooks.sender import WebhookSender

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
    return PollerService(sessions, providers, policy_for(settings), guard=guard_for(settings),
                         max_throttle_wait_s=settings.rate_limit_max_wait_seconds, threads=settings.poll_threads)


def guard_for(settings: Settings) -> RedisGuard | None:
    """Rate limits and breakers live in the broker's Redis; without one there is nothing to share."""
    url = settings.broker_url
    if not url or not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return RedisGuard(redis.Redis.from_url(url), BreakerPolicy(
        window_s=settings.breaker_window_seconds, min_calls=settings.breaker_min_calls,
        failure_ratio=settings.breaker_failure_ratio, cooldown_s=settings.breaker_cooldown_seconds,
        max_cooldown_s=settings.breaker_max_cooldown_seconds))


def build_delivery(settings: Settings) -> DeliveryService:
    """The delivery service: webhooks, and the SQL sink when POLLER_SINK_DATABASE_URL is set."""
    sessions = sessions_for(settings)
    policy = DeliveryPolicy(schedule=settings.retry_schedule(), jitter_ratio=settings.webhook_retry_jitter_ratio,
                            disable_after=settings.disable_after(), allow_http=settings.webhook_allow_http,
                            allow_private=settings.webhook_allow_private)
    sink = SqlSink(settings.sink_database_url, settings.sink_table) if settings.sink_database_url else None
    if sink is not None:
        subscriptions_for(settings).ensure_sink()
    return DeliveryService(sessions, WebhookSender(timeout_s=settings.webhook_timeout_seconds,
                                                   pool_size=settings.delivery_threads),
                           policy, sink=sink, threads=settings.delivery_threads)


def subscriptions_for(settings: Settings) -> Subscriptions:
    """Subscription management with the same URL rules as delivery."""
    return Subscriptions(sessions_for(settings), allow_http=settings.webhook_allow_http,
                         allow_private=settings.webhook_allow_private, known_providers=tuple(REGISTRY))
