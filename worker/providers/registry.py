"""Provider name -> adapter, settings model and the account set built from them.

Adding a provider today takes its module, a line here, a settings field in config/settings.py
and the event schema's enum (issue 15 is to make it the module and this line only)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import InputError
from worker.providers import amili_ada, amili_arm, amili_collection, amili_distribution, billit
from worker.providers.base import Provider, ProviderContext
from worker.providers.settings import DEFAULT_ACCOUNT, ProviderSettings


@dataclass(frozen=True)
class ProviderSpec:
    """How to build one provider's adapter for one account."""

    name: str
    settings_cls: type[ProviderSettings]
    factory: Callable[[Any, str, ProviderContext], Provider]


#: Every provider this build knows.
REGISTRY: dict[str, ProviderSpec] = {
    spec.name: spec for spec in (
        ProviderSpec(billit.NAME, billit.BillitSettings, billit.BillitProvider),
        ProviderSpec(amili_distribution.NAME, amili_distribution.AmiliDistributionSettings,
                     amili_distribution.AmiliDistributionProvider),
        ProviderSpec(amili_collection.NAME, amili_collection.AmiliCollectionSettings,
                     amili_collection.AmiliCollectionProvider),
        ProviderSpec(amili_ada.NAME, amili_ada.AmiliAdaSettings, amili_ada.AmiliAdaProvider),
        ProviderSpec(amili_arm.NAME, amili_arm.AmiliArmSettings, amili_arm.AmiliArmProvider),
    )
}


def spec(name: str) -> ProviderSpec:
    """The spec for ``name``, or an InputError listing the known providers."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown provider {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


class ProviderSet:
    """Adapters built on first use and kept, one per provider and account, so each keeps its HTTP
    connections alive and its access token cached.

    Args:
        settings: provider name -> that provider's settings.
        ctx: HTTP options, clock and credential store shared by all adapters.
    """

    def __init__(self, settings: Mapping[str, ProviderSettings], ctx: ProviderContext | None = None) -> None:
        self._settings = settings
        self.ctx = ctx or ProviderContext()
        self._built: dict[tuple[str, str], Provider] = {}
        self._lock = threading.Lock()

    def get(self, name: str, account: str = DEFAULT_ACCOUNT) -> Provider:
        """The adapter for ``account`` of provider ``name``.

        Raises:
            InputError: unknown provider.
            ConfigurationError: unknown account, or invalid account settings.
        """
        with self._lock:
            if (name, account) not in self._built:
                s = spec(name)
                base = self._settings.get(name) or s.settings_cls()
                self._built[name, account] = s.factory(base.for_account(account), account, self.ctx)
            return self._built[name, account]
