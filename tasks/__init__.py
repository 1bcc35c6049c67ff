"""Thin Celery tasks: each binds its log context and calls the service it fronts (polling,
delivery, sweeps, the prune), nothing else; the HTTP API calls the same services."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from config.settings import Settings, get_settings

T = TypeVar("T")


def per_process(build: Callable[[Settings], T]) -> Callable[[], T]:
    """``build(get_settings())``, made on first use and kept for the life of the process: a
    service keeps its database pool, its adapters' connections and their tokens between tasks."""
    return lru_cache(maxsize=1)(lambda: build(get_settings()))
