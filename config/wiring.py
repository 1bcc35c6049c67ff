"""Build the application objects from Settings. One place, so tasks and CLI agree."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from worker.apikeys import ApiKeys
from worker.catalog import Catalog
from worker.clock import utcnow
from worker.delivery import DeliveryPolicy, DeliveryService
from worker.errors import ConfigurationError
from worker.faults import (
    Fault,
    check_database_writable,
    missing_file,
    recent_faults,
    record_fault,
    sqlite_inode,
)
from worker.feed import EventFeed
from worker.guard import BreakerPolicy, RedisGuard
from worker.ingress import Ingress
from worker.policy import PollPolicy
from worker.provider_webhooks import ProviderWebhooks
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.registry import ProviderSet
from worker.pruning import RetentionService
from worker.reconcile import Reconciler
from worker.service import PollerService
from worker.sinks.sql import SqlSink
from worker.status import Check, check_health
from worker.store import crypto
from worker.store.credentials import DbCredentialStore
from worker.store.db import make_engine, make_sessionmaker, sqlite_file
from worker.store.migrate import pending, upgrade
from worker.subscriptions import Subscriptions
from worker.sweeps import Sweeper
from worker.webhooks.sender import WebhookSender

_engines: dict[tuple[int, str], Engine] = {}
#: The SQLite file's inode when this process first used it: a deleted or replaced file is noticed.
_inodes: dict[tuple[int, str], int | None] = {}
_fault_clients: dict[tuple[int, str], Any] = {}
log = structlog.get_logger(__name__)


def engine_for(settings: Settings) -> Engine:
    """One engine per process and URL: pooled connections must not cross a fork."""
    key = (os.getpid(), settings.resolved_database_url())
    if key not in _engines:
        crypto.install(keyring_for(settings))
        # Enough pooled connections for every task slot and its helpers: a pool smaller than the
        # threads using it opens and closes a connection for each overflowing transaction.
        _engines[key] = make_engine(key[1], pool_size=settings.worker_concurrency * 2 + 4, max_overflow=20,
                                    busy_timeout_s=settings.database_busy_timeout_seconds)
    return _engines[key]


def keyring_for(settings: Settings) -> crypto.Keyring:
    """POLLER_SECRET_KEYS, else ``{home}/secret.key``, generated once when the database is SQLite."""
    keys = settings.secret_keys.get_secret_value() if settings.secret_keys else None
    return crypto.keyring_from(keys, settings.home / "secret.key",
                               create=settings.resolved_database_url().startswith("sqlite"))


def sessions_for(settings: Settings, *, read_only: bool = False) -> sessionmaker[Session]:
    """A session factory on the process's engine (``read_only``: for what never writes)."""
    return make_sessionmaker(engine_for(settings), read_only=read_only)


def policy_for(settings: Settings) -> PollPolicy:
    """Scheduling tunables from settings."""
    return PollPolicy(backoff_base_s=settings.backoff_base_seconds,
                      backoff_max_s=settings.backoff_max_seconds,
                      jitter_ratio=settings.jitter_ratio, failing_after=settings.failing_after)


def providers_for(settings: Settings) -> ProviderSet:
    """The provider adapters, configured from settings."""
    ctx = ProviderContext(
        http=HttpOptions(timeout_s=settings.http_timeout_seconds, max_body_bytes=settings.max_body_bytes,
                         pool_size=settings.poll_threads, **http_environment()),
        credentials=DbCredentialStore(sessions_for(settings)),
    )
    return ProviderSet(settings.providers(), ctx, registry=settings.PROVIDERS)


def http_environment() -> dict[str, Any]:
    """What requests would read from the environment on every call, read once: proxies (with
    NO_PROXY, left to requests: it must see each URL) and the CA bundle."""
    import urllib.request

    if urllib.request.getproxies():
        return {"trust_env": True}
    return {"trust_env": False,
            "ca_bundle": os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None}


def build_service(settings: Settings) -> PollerService:
    """The poller service with providers configured from settings."""
    return PollerService(sessions_for(settings), providers_for(settings), policy_for(settings),
                         guard=guard_for(settings), max_throttle_wait_s=settings.rate_limit_max_wait_seconds,
                         threads=settings.poll_threads, reads=sessions_for(settings, read_only=True),
                         reconciler=reconciler_for(settings))


def reconciler_for(settings: Settings) -> Reconciler | None:
    """The reconciliation intervals (POLLER_<P>__RECONCILE_SECONDS), if any account has one."""
    plans = settings.reconcile_plans()
    # A sweep that reads a list of some kinds only (Amili Norway's invoices) slows only those.
    covered = {name: spec.factory.listed_kinds for name, spec in settings.PROVIDERS.items()
               if hasattr(spec.factory, "listed_kinds")}
    return Reconciler(sessions_for(settings, read_only=True), plans, clock=utcnow, covered=covered) if plans else None


def catalog_for(settings: Settings, *, reads: sessionmaker[Session] | None = None) -> Catalog:
    """Item management (the API's and the CLI's `track`)."""
    return Catalog(sessions_for(settings), providers_for(settings),
                   default_interval_s=settings.default_interval_seconds, reads=reads)


def broker_ping(url: str | None) -> Callable[[], None] | None:
    """A function that raises when the broker does not answer within 2 s (None: no broker)."""
    if not url:
        return None

    def ping() -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    return ping


#: What /readyz checks: what the API needs and whether polling is alive at all.
READINESS_CHECKS = ("database", "broker", "beat")


def build_api(settings: Settings, *, kick: Callable[[], None] | None = None) -> Any:
    """The HTTP application (FastAPI), on the database as it is: the API never migrates. ``kick``
    asks for the dispatch tick after a push (config.kicks; None waits for the next tick)."""
    from api.app import create_app
    from api.dashboard import page_data
    from api.deps import ApiServices

    # The API's reads (pages, lists, the key check, health) take no write lock on SQLite, so
    # they neither wait for nor hold up the workers' writes.
    reads = sessions_for(settings, read_only=True)
    sessions = sessions_for(settings)
    ping = broker_ping(settings.broker_url)

    def readiness() -> list[Check]:
        path = sqlite_file(settings.resolved_database_url())
        if path is not None and not path.exists():
            # A pooled connection still reads a deleted SQLite file; that is not a database.
            return [Check("database", False, missing_file(path))]
        checks = check_health(reads, tick_s=settings.tick_seconds, max_lag_s=float("inf"), broker_ping=ping)
        return [c for c in checks if c.name in READINESS_CHECKS]

    return create_app(ApiServices(
        catalog=catalog_for(settings, reads=reads), feed=EventFeed(reads), keys=ApiKeys(sessions, reads=reads),
        subscriptions=subscriptions_for(settings, reads=reads), readiness=readiness,
        page_data=lambda: page_data(reads, settings.tick_seconds), dashboard_public=settings.dashboard_public,
        secret_grace_s=settings.secret_grace().total_seconds(), ingress=ingress_for(settings, sessions, kick=kick),
    ))


def redis_broker(settings: Settings) -> str | None:
    """The broker URL when the broker is a Redis (the shared store of dedupe keys, rate limits,
    breakers and worker faults); None otherwise."""
    url = settings.broker_url
    return url if url and url.startswith(("redis://", "rediss://", "unix://")) else None


def ingress_for(settings: Settings, sessions: sessionmaker[Session], *,
                kick: Callable[[], None] | None = None) -> Ingress:
    """Provider pushes: deduplicated through the broker's Redis when there is one; ``kick`` asks
    for the dispatch tick (config.kicks)."""
    seen: Callable[[str, int], bool] | None = None
    url = redis_broker(settings)
    if url is not None:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

        def seen(key: str, ttl_s: int) -> bool:
            return bool(client.set(f"poller:push:{key}", 1, nx=True, ex=ttl_s))

    return Ingress(sessions, providers_for(settings), seen=seen, kick=kick,
                   registered=provider_webhooks_for(settings, sessions).secrets)


def provider_webhooks_for(settings: Settings, sessions: sessionmaker[Session] | None = None) -> ProviderWebhooks:
    """The webhooks registered with providers (`poller providers webhooks sync`), at POLLER_PUBLIC_URL."""
    return ProviderWebhooks(sessions or sessions_for(settings), providers_for(settings), settings.public_url)


def sweeper_for(settings: Settings, *, kick: Callable[[], None] | None = None,
                deliver: Callable[[], None] | None = None, poller: PollerService | None = None) -> Sweeper:
    """Incremental sweeps (beat's sweep tick), for the accounts with a sweep interval; ``kick`` and
    ``deliver`` ask for the dispatch tick and for delivery (config.kicks); ``poller`` (the process's
    own, or a new one) writes what a sweep may store from a list."""
    return Sweeper(sessions_for(settings), providers_for(settings), settings.sweep_intervals(),
                   kick=kick, discover=settings.discover_plans(),
                   discover_interval_s=settings.default_interval_seconds,
                   store=(poller or build_service(settings)).store_listed, deliver=deliver)


def retention_for(settings: Settings) -> RetentionService:
    """The prune (`poller prune`, beat's daily task) with the POLLER_RETENTION_* settings."""
    return RetentionService(sessions_for(settings), settings.retention(), reads=sessions_for(settings, read_only=True))


def guard_for(settings: Settings) -> RedisGuard | None:
    """Rate limits and breakers live in the broker's Redis; without one there is nothing to share."""
    url = redis_broker(settings)
    if url is None:
        return None
    # Timeouts: a Redis that hangs must fail a chunk's admission (which then fails open), not hold it.
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    return RedisGuard(client, BreakerPolicy(
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


def subscriptions_for(settings: Settings, *, reads: sessionmaker[Session] | None = None) -> Subscriptions:
    """Subscription management with the same URL rules and sender settings as delivery."""
    return Subscriptions(sessions_for(settings), allow_http=settings.webhook_allow_http,
                         allow_private=settings.webhook_allow_private, known_providers=tuple(settings.PROVIDERS),
                         sender=WebhookSender(timeout_s=settings.webhook_timeout_seconds), reads=reads)


def _fault_client(settings: Settings) -> Any:
    url = redis_broker(settings)
    if url is None:
        return None
    key = (os.getpid(), url)
    if key not in _fault_clients:
        _fault_clients[key] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    return _fault_clients[key]


def record_worker_fault(settings: Settings, where: str, error: str) -> None:
    """Note a failure of this worker process where `poller health` reads it (the broker's Redis)."""
    client = _fault_client(settings)
    if client is not None:
        record_fault(client, Fault(at=time.time(), pid=os.getpid(), where=where, error=error[:300]))


def worker_faults(settings: Settings, broker_url: str | None, *, within_s: float) -> list[Fault]:
    """Faults the workers recorded in the last ``within_s`` seconds (newest first)."""
    if not broker_url:
        return []
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return recent_faults(client, since=time.time() - within_s)
    finally:
        client.close()


def check_worker_database(settings: Settings, *, record: bool = True) -> str | None:
    """Check this process can write the database; log (and record a fault) when it cannot."""
    path = sqlite_file(settings.resolved_database_url())
    if path is not None and not path.exists():
        # Checked before the engine exists: creating the engine would create an empty file.
        missing = missing_file(path)
        log.error("worker.database_unwritable", reason=missing)
        if record:
            record_worker_fault(settings, "database", missing)
        return missing
    engine = engine_for(settings)
    key = (os.getpid(), settings.resolved_database_url())
    if key not in _inodes:
        _inodes[key] = sqlite_inode(engine)
    reason = check_database_writable(engine, inode=_inodes[key])
    if reason is not None:
        log.error("worker.database_unwritable", reason=reason)
        if record:
            record_worker_fault(settings, "database", reason)
    return reason


def require_writable_database(settings: Settings) -> None:
    """Raise ConfigurationError when this process cannot write the database (each dispatch tick)."""
    reason = check_worker_database(settings, record=False)  # the failed task is recorded as such
    if reason is not None:
        raise ConfigurationError(reason)


def current_engine(settings: Settings) -> Engine:
    """The database engine, without migrating: for what only reads (and for `poller api`, which
    must not change the schema under a running worker). A schema behind this poller's is an error
    that says to run `poller migrate`."""
    path = sqlite_file(settings.resolved_database_url())
    if path is not None and not path.exists():
        raise ConfigurationError(f"no database at {path}; run `poller migrate` to create it "
                                 "(`poller run` creates it too), or set POLLER_DATABASE_URL")
    engine = engine_for(settings)
    behind = pending(engine)
    if behind is not None:
        raise ConfigurationError(f"{behind}; run `poller migrate` (`poller run` migrates on start)")
    return engine


def migrated_engine(settings: Settings, *, create: bool = False) -> Engine:
    """The database engine, migrated to the latest schema.

    A SQLite file that does not exist is created only when ``create`` (``poller migrate`` and
    ``poller run``); for every other command it is an error, because a deleted database silently
    replaced by an empty one looks like a poller that lost everything it tracked.
    """
    path = sqlite_file(settings.resolved_database_url())
    # Checked before the engine exists: creating the engine creates the file.
    if path is not None and not create and not path.exists():
        raise ConfigurationError(f"no database at {path}; run `poller migrate` to create it "
                                 "(`poller run` creates it too), or set POLLER_DATABASE_URL")
    engine = engine_for(settings)
    upgrade(engine)
    return engine

