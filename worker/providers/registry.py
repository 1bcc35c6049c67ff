"""Provider name -> adapter. Adding a provider is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from worker.errors import InputError
from worker.providers import billit
from worker.providers.base import HttpClient, HttpOptions, Provider, utcnow


@dataclass(frozen=True)
class ProviderSpec:
    """How to build one provider's adapter."""

    name: str
    settings_cls: type[BaseModel]
    build: Callable[[Any, HttpOptions, Callable[[], datetime]], Provider]
    default_base_url: str


def _billit(settings: billit.BillitSettings, http: HttpOptions, clock: Callable[[], datetime]) -> Provider:
    client = HttpClient(billit.NAME, settings.base_url, http, clock=clock,
                        describe_error=billit.describe_error)
    return billit.BillitProvider(settings, client)


#: Every provider this build knows.
REGISTRY: dict[str, ProviderSpec] = {
    billit.NAME: ProviderSpec(billit.NAME, billit.BillitSettings, _billit, "https://api.billit.be"),
}


def spec(name: str) -> ProviderSpec:
    """The spec for ``name``, or an InputError listing the known providers."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown provider {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


class ProviderSet:
    """Adapters built on first use and kept, so each keeps its HTTP connections alive.

    Args:
        settings: provider name -> that provider's settings model.
        http: shared HTTP options.
        clock: wall clock for Retry-After dates.
    """

    def __init__(
        self, settings: Mapping[str, BaseModel], http: HttpOptions = HttpOptions(),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._built: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        """The adapter for provider ``name``."""
        if name not in self._built:
            s = spec(name)
            cfg = self._settings.get(name) or s.settings_cls()
            self._built[name] = s.build(cfg, self._http, self._clock)
        return self._built[name]
