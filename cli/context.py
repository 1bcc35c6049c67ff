"""What every `poller` command shares: the settings (with the CLI's logging), the services built
from them, and the SIGTERM handling. The command modules import this, never each other."""

from __future__ import annotations

import signal
from functools import lru_cache
from typing import Any

from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.wiring import build_service, catalog_for, current_engine
from worker.catalog import Catalog
from worker.service import PollerService


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings, with logging quiet enough for a terminal (INFO becomes WARNING)."""
    found = get_settings()
    configure_logging(found.log_format, "WARNING" if found.log_level.upper() == "INFO" else found.log_level)
    return found


@lru_cache(maxsize=1)
def service() -> PollerService:
    """The polling service on the current schema."""
    # Only `poller migrate`, `poller run` and `poller worker` change the schema; every other
    # command works on the database as it is, or says to run `poller migrate`.
    current = settings()
    current_engine(current)
    return build_service(current)


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    """Item management on the current schema."""
    current = settings()
    current_engine(current)
    return catalog_for(current)


def reset() -> None:
    """Forget the settings and services: the environment changed (`poller run` sets the broker
    for the children it forks, which must read it afresh)."""
    get_settings.cache_clear()
    for cached in (settings, service, catalog):
        cached.cache_clear()


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM (systemd, docker stop, kill) like Ctrl-C: one clean shutdown path."""
    def _handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _handler)
