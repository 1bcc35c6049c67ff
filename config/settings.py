"""Settings from the environment (``POLLER_*``) and an optional ``.env`` file.

This is the only module that reads the environment. Everything else receives values.
Each registered provider (worker.providers.registry) adds its settings as one field,
``POLLER_<NAME>__<SETTING>``, read with ``settings.provider(name)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.validation import (
    DATABASE_BACKENDS,
    MAX_SECONDS,
    check_broker_url,
    check_database_url,
    check_host,
    check_log_level,
    describe_validation_error,
    duration_seconds,
    parse_duration,
    parse_schedule,
    read_dotenv,
    retention_count,
    retention_seconds,
    time_of_day,
    unknown_variables,
)
from worker.discovery import Condition, parse_filter
from worker.errors import ConfigurationError
from worker.providers.registry import REGISTRY, Registry, spec
from worker.providers.settings import ProviderSettings, SweepingSettings, check_http_url
from worker.retention import Retention
from worker.store.crypto import check_keys

P = TypeVar("P", bound=ProviderSettings)


def _kept(check: Callable[[str], object]) -> Callable[[str], str]:
    """``check`` as a field check that keeps the text as written (what ``check`` returns is dropped)."""

    def checked(value: str) -> str:
        check(value)
        return value

    return checked


#: The checks of text settings at load: field -> a function that raises ValueError naming what the
#: value must be, and returns the value to keep (normalized, or as written).
CHECKS: dict[str, Callable[[Any], Any]] = {
    "database_url": lambda value: check_database_url(value, DATABASE_BACKENDS),
    "sink_database_url": check_database_url,
    "public_url": lambda value: check_http_url(value) if value else None,
    "broker_url": check_broker_url,
    "secret_keys": lambda value: SecretStr(check_keys(value.get_secret_value())),
    "log_level": check_log_level,
    "metrics_addr": check_host,
    "api_addr": check_host,
    "webhook_retry_schedule": _kept(parse_schedule),
    "webhook_disable_after": _kept(duration_seconds),
    "webhook_secret_grace": _kept(duration_seconds),
    "retention_events": _kept(retention_seconds),
    "retention_attempts": _kept(retention_seconds),
    "retention_finished_items": _kept(retention_seconds),
    "retention_snapshots_keep": _kept(retention_count),
    "prune_at": _kept(time_of_day),
}


class CoreSettings(BaseSettings):
    """Every setting but the providers', with safe local defaults. Secrets have no defaults.

    :func:`settings_model` adds one field per registered provider; ``Settings`` is that model.
    """

    model_config = SettingsConfigDict(
        env_prefix="POLLER_", env_file=".env", env_nested_delimiter="__", extra="ignore",
        # inf passes every `gt=0` and then breaks the first datetime sum: refuse it at load.
        allow_inf_nan=False,
    )

    #: Directory for the embedded defaults: SQLite file, embedded Redis, beat state.
    home: Path = Path("var")
    #: SQLAlchemy URL; a SQLite file under ``home`` when unset.
    database_url: str | None = None
    #: Celery broker; `poller run` starts an embedded Redis when unset.
    broker_url: str | None = None
    #: Fernet keys for the secrets stored in the database, comma-separated, newest first; when
    #: unset, ``{home}/secret.key`` (generated once for a SQLite database).
    secret_keys: SecretStr | None = None

    #: SQLite: how long a write waits for the database lock before it fails (and is retried). It
    #: tries for the lock every 1-3 ms meanwhile, so it gets in at the first pause between another
    #: writer's transactions.
    database_busy_timeout_seconds: float = Field(30.0, gt=0)

    tick_seconds: float = Field(5.0, gt=0)
    lease_seconds: float = Field(120.0, gt=0)
    dispatch_limit: int = Field(20_000, gt=0)
    dispatch_chunk: int = Field(200, gt=0)
    default_interval_seconds: float = Field(300.0, gt=0)
    failing_after: int = Field(5, ge=1)
    backoff_base_seconds: float = Field(10.0, gt=0)
    backoff_max_seconds: float = Field(3600.0, gt=0)
    jitter_ratio: float = Field(0.1, ge=0, lt=1)
    http_timeout_seconds: float = Field(10.0, gt=0)
    max_body_bytes: int = Field(1_000_000, gt=0)
    #: How the worker runs tasks: ``threads`` (one process; polls wait on the network, not the
    #: CPU) or ``prefork`` (a process per task slot, for CPU-bound custom adapters).
    worker_pool: Literal["threads", "prefork"] = "threads"
    #: Tasks (poll chunks, delivery batches) a worker runs at once.
    worker_concurrency: int = Field(4, gt=0)
    #: Polls in flight at once per worker process, across its chunks (each waits on the network).
    poll_threads: int = Field(64, ge=1, le=512)

    #: Circuit breaker, per provider account: pause it when, within the window, at least
    #: min_calls were made and failure_ratio of them failed (timeouts, 5xx, 429).
    breaker_window_seconds: float = Field(60.0, gt=0)
    breaker_min_calls: int = Field(10, ge=1)
    breaker_failure_ratio: float = Field(0.5, gt=0, le=1)
    breaker_cooldown_seconds: float = Field(30.0, gt=0)
    breaker_max_cooldown_seconds: float = Field(600.0, gt=0)
    #: A rate-limited poll waits up to this long for its slot, else it is deferred.
    rate_limit_max_wait_seconds: float = Field(2.0, ge=0)

    #: Webhooks: http and private targets are refused unless allowed (tests and local receivers).
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(15.0, gt=0)
    #: Seconds between attempts after each failure; attempts = len + 1. Svix's schedule by default.
    webhook_retry_schedule: str = "5,300,1800,7200,18000,36000,36000"
    webhook_retry_jitter_ratio: float = Field(0.1, ge=0, lt=1)
    #: A subscription failing without a success this long is disabled (seconds, or 30m / 12h / 5d).
    webhook_disable_after: str = "5d"
    #: How long the old secret keeps signing after rotate-secret (same units).
    webhook_secret_grace: str = "24h"
    delivery_lease_seconds: float = Field(60.0, gt=0)
    delivery_chunk: int = Field(100, gt=0)
    #: Independent deliveries (other items, other subscriptions) of one batch sent at once.
    delivery_threads: int = Field(8, ge=1, le=64)
    delivery_limit: int = Field(20_000, gt=0)
    #: The database-table sink: every event, once, in this database's table (created if absent).
    sink_database_url: str | None = None
    sink_table: str = "poller_events"

    #: Retention (docs/operations.md, "Retention"): events, delivery attempts, and finished items
    #: with their history, older than these go; snapshots kept per item besides its latest.
    #: ``0`` or ``forever`` keeps everything. Events a subscriber still waits for always stay.
    retention_events: str = "30d"
    retention_snapshots_keep: str = "100"
    retention_attempts: str = "30d"
    retention_finished_items: str = "90d"
    #: When beat runs the daily prune: HH:MM, UTC.
    prune_at: str = "03:30"

    #: Send Celery task events (for Flower).
    task_events: bool = False
    #: A dead `poller beat` leader is replaced by a standby within this many seconds.
    beat_failover_seconds: float = Field(30.0, ge=1)
    #: Prometheus /metrics of `poller worker` and `poller beat` (0 turns one off).
    metrics_port: int = Field(9464, ge=0, le=65535)
    beat_metrics_port: int = Field(9465, ge=0, le=65535)
    #: Where /metrics listens; 0.0.0.0 in containers, so Prometheus can reach it.
    metrics_addr: str = "127.0.0.1"

    #: The HTTP API (`poller api`, and `poller run`): address and port it listens on.
    api_addr: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    #: Serve the status page (GET /) without an API key, e.g. on a trusted network.
    dashboard_public: bool = False
    #: Where providers reach the HTTP API (https://poller.example.com): the address
    #: `poller providers webhooks sync` registers, as <it>/ingress/<provider>/<account>.
    public_url: str | None = None

    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    #: The providers whose settings are fields of this model (none here: see settings_model).
    PROVIDERS: ClassVar[Registry] = {}

    @overload
    def provider(self, name: str) -> ProviderSettings: ...

    @overload
    def provider(self, name: type[P]) -> P: ...

    def provider(self, name: str | type[ProviderSettings]) -> ProviderSettings:
        """One provider's settings (``POLLER_<NAME>__*``), by name, or by its settings class for
        that class's own fields: ``settings.provider(BillitSettings).party_id``.

        Raises:
            InputError: no such provider.
        """
        key = name if isinstance(name, str) else name.NAME
        registered = spec(key, self.PROVIDERS).settings_cls
        expected = registered if isinstance(name, str) else name
        value = getattr(self, key)
        if not isinstance(value, expected):
            raise TypeError(f"{key} settings are a {type(value).__name__}, not a {expected.__name__}")
        return value

    def providers(self) -> dict[str, ProviderSettings]:
        """Provider name -> its settings, for every provider of this model."""
        return {name: self.provider(name) for name in self.PROVIDERS}

    def _sweeping(self) -> Iterator[tuple[str, str, SweepingSettings]]:
        """``(provider, account, its settings)`` for every account with a sweep interval."""
        for name, provider in self.providers().items():
            if isinstance(provider, SweepingSettings):
                for account in provider.account_names():
                    settings = provider.for_account(account)
                    if settings.sweep_seconds:
                        yield name, account, settings

    def sweep_intervals(self) -> dict[tuple[str, str], float]:
        """``(provider, account)`` -> POLLER_<P>__SWEEP_SECONDS, for every account that sweeps."""
        return {(name, account): s.sweep_seconds for name, account, s in self._sweeping()}

    def discover_plans(self) -> dict[tuple[str, str], tuple[Condition, ...]]:
        """``(provider, account)`` -> the discovery filter's conditions, for every sweeping account
        with POLLER_<P>__DISCOVER=true."""
        return {(name, account): parse_filter(s.discover_filter)
                for name, account, s in self._sweeping() if s.discover}

    def reconcile_plans(self) -> dict[tuple[str, str], tuple[float, float]]:
        """``(provider, account)`` -> (sweep seconds, POLLER_<P>__RECONCILE_SECONDS), for every
        account whose items are polled rarely while its sweeps are healthy."""
        return {(name, account): (s.sweep_seconds, s.reconcile_seconds)
                for name, account, s in self._sweeping() if s.reconcile_seconds}

    @field_validator("*")
    @classmethod
    def _bounded_seconds(cls, value: Any) -> Any:
        # Every float setting is seconds or a ratio; a huge one overflows `now + timedelta(...)`.
        if isinstance(value, float) and value > MAX_SECONDS:
            raise ValueError(f"must be at most {MAX_SECONDS:.0f} (366 days)")
        return value

    @field_validator("lease_seconds")
    @classmethod
    def _lease_outlasts_lookahead(cls, value: float, info: ValidationInfo) -> float:
        # A dispatch claims items half a tick before they are due, so a chunk gets the lease less
        # that to start its polls: a lease no longer than half a tick would leave none.
        tick = info.data.get("tick_seconds")
        if tick is not None and value <= tick / 2:
            raise ValueError("must be more than half of POLLER_TICK_SECONDS (a dispatch claims items half a "
                             "tick before they are due)")
        return value

    @field_validator("home", mode="before")
    @classmethod
    def _home(cls, value: Any) -> Any:
        # An empty POLLER_HOME would quietly mean the current directory (keys and database in the checkout).
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a directory path, not empty")
        return value

    @field_validator("*")
    @classmethod
    def _checked(cls, value: Any, info: ValidationInfo) -> Any:
        check = CHECKS.get(info.field_name or "")
        # None is an optional setting left unset: nothing to check.
        return check(value) if check is not None and value is not None else value

    def retention(self) -> Retention:
        """The POLLER_RETENTION_* settings (checked at load)."""
        return Retention(events_s=retention_seconds(self.retention_events),
                         snapshots_keep=retention_count(self.retention_snapshots_keep),
                         attempts_s=retention_seconds(self.retention_attempts),
                         finished_items_s=retention_seconds(self.retention_finished_items))

    def metrics_port_for(self, role: str) -> int:
        """The /metrics port of a process role (``worker`` or ``beat``)."""
        return self.beat_metrics_port if role == "beat" else self.metrics_port

    def retry_schedule(self) -> tuple[float, ...]:
        """POLLER_WEBHOOK_RETRY_SCHEDULE as seconds (checked at load)."""
        try:
            return parse_schedule(self.webhook_retry_schedule)
        except ValueError as err:
            raise ConfigurationError(f"POLLER_WEBHOOK_RETRY_SCHEDULE {err}") from None

    def disable_after(self) -> timedelta:
        """POLLER_WEBHOOK_DISABLE_AFTER as a duration."""
        return parse_duration(self.webhook_disable_after, "POLLER_WEBHOOK_DISABLE_AFTER")

    def secret_grace(self) -> timedelta:
        """POLLER_WEBHOOK_SECRET_GRACE as a duration."""
        return parse_duration(self.webhook_secret_grace, "POLLER_WEBHOOK_SECRET_GRACE")

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``{home}/poller.db``."""
        return self.database_url or f"sqlite+pysqlite:///{(self.home / 'poller.db').resolve()}"


def settings_model(registry: Registry) -> type[CoreSettings]:
    """CoreSettings plus one field per provider of ``registry``, each defaulting to its settings
    model's defaults: ``POLLER_<NAME>__<SETTING>``, and ``POLLER_<NAME>__ACCOUNTS__<ACCOUNT>__<SETTING>``
    for more accounts.

    Raises:
        ValueError: a provider named like a core setting or method (``home``, ``retention``).
    """
    clash = sorted(n for n in registry if n in CoreSettings.model_fields or hasattr(CoreSettings, n))
    if clash:
        raise ValueError(f"provider names {clash} are taken by core settings")
    fields: dict[str, Any] = {name: (s.settings_cls, Field(default_factory=s.settings_cls))
                              for name, s in registry.items()}
    doc = "Every setting, with safe local defaults; secrets have none. One field per provider of PROVIDERS."
    model = create_model("Settings", __base__=CoreSettings, __module__=__name__, __doc__=doc, **fields)
    model.PROVIDERS = registry
    return model


if TYPE_CHECKING:
    # mypy sees the core model: provider settings are read through `provider()`, typed.
    Settings = CoreSettings
else:
    #: The settings of this build: the core and every provider of the registry.
    Settings = settings_model(REGISTRY)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once.

    Raises:
        ConfigurationError: a value is invalid; the message names the variable.
    """
    return load_settings(Settings)


def load_settings(model: type[CoreSettings]) -> CoreSettings:
    """Settings of ``model`` from the environment and ``.env``, every value checked.

    Raises:
        ConfigurationError: a value is invalid or a ``POLLER_`` variable sets nothing; the message
            names the variable.
    """
    env_file = model.model_config.get("env_file")
    dotenv = read_dotenv(str(env_file) if isinstance(env_file, (str, Path)) else None)
    # A misspelt secret or URL would silently do nothing: refuse it before anything starts.
    unknown = unknown_variables(model, [*os.environ, *dotenv])
    if unknown:
        raise ConfigurationError("; ".join(unknown))
    try:
        settings = model()
    except ValidationError as err:
        raise ConfigurationError(describe_validation_error(err)) from None
    check_accounts(settings)
    return settings


def check_accounts(settings: CoreSettings) -> None:
    """Validate every named provider account's overrides now, not at its first poll.

    Raises:
        ConfigurationError: naming the account's variable.
    """
    for provider in settings.providers().values():
        for account in provider.account_names():
            provider.for_account(account)
