"""Provider name -> adapter and settings model, and the account set built from them.

A provider is its module (an adapter class and a :class:`~worker.providers.settings.ProviderSettings`
subclass) plus one line in :data:`REGISTRY`. Everything else that names providers reads this
registry: the settings model's ``POLLER_<NAME>__*`` fields (config.settings.settings_model), the
event schema's provider enum (worker.webhooks.schema), the subscription filters and the wiring.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from worker.errors import InputError
from worker.providers import amili_ada, amili_arm, amili_collection, amili_distribution, billit
from worker.providers.base import Provider, ProviderContext
from worker.providers.settings import DEFAULT_ACCOUNT, ProviderSettings

#: A provider name: the settings field, the ``POLLER_<NAME>__`` prefix and the value in events.
NAME_RULE = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True)
class ProviderSpec:
    """How to build one provider's adapter for one account.

    Attributes:
        name: the provider's name (its settings' ``NAME``).
        settings_cls: its settings model (``POLLER_<NAME>__*``).
        factory: ``(settings for the account, account, ctx) -> adapter``; usually the adapter class.
    """

    name: str
    settings_cls: type[ProviderSettings]
    factory: Callable[[Any, str, ProviderContext], Provider]


#: Provider name -> spec, in the order providers are listed (settings, schema enum, messages).
Registry = Mapping[str, ProviderSpec]


def registry_of(specs: Iterable[ProviderSpec]) -> dict[str, ProviderSpec]:
    """A registry of ``specs``, checked.

    Raises:
        ValueError: a name that cannot be an environment variable segment, a name given twice, or
            settings whose ``NAME`` is another (their variables would be named wrongly).
    """
    out: dict[str, ProviderSpec] = {}
    for s in specs:
        if not NAME_RULE.fullmatch(s.name) or "__" in s.name:
            raise ValueError(f"provider name {s.name!r} must be lowercase letters, digits and single "
                             "underscores, starting with a letter (it becomes POLLER_<NAME>__...)")
        if s.name in out:
            raise ValueError(f"provider {s.name!r} is registered twice")
        if s.name != s.settings_cls.NAME:
            raise ValueError(f"{s.settings_cls.__name__}.NAME is {s.settings_cls.NAME!r}, not {s.name!r}")
        out[s.name] = s
    return out


#: Every provider this build knows. A new provider is its module and one line here.
REGISTRY: Registry = registry_of([
    ProviderSpec(billit.NAME, billit.BillitSettings, billit.BillitProvider),
    ProviderSpec(amili_distribution.NAME, amili_distribution.AmiliDistributionSettings,
                 amili_distribution.AmiliDistributionProvider),
    ProviderSpec(amili_collection.NAME, amili_collection.AmiliCollectionSettings,
                 amili_collection.AmiliCollectionProvider),
    ProviderSpec(amili_ada.NAME, amili_ada.AmiliAdaSettings, amili_ada.AmiliAdaProvider),
    ProviderSpec(amili_arm.NAME, amili_arm.AmiliArmSettings, amili_arm.AmiliArmProvider),
])


def spec(name: str, registry: Registry = REGISTRY) -> ProviderSpec:
    """The spec for ``name``, or an InputError listing the known providers."""
    try:
        return registry[name]
    except KeyError:
        raise InputError(f"unknown provider {name!r}; known: {', '.join(sorted(registry))}") from None


class ProviderSet:
    """Adapters built on first use and kept, one per provider and account, so each keeps its HTTP
    connections alive and its access token cached.

    Args:
        settings: provider name -> that provider's settings (defaults for the others).
        ctx: HTTP options, clock and credential store shared by all adapters.
        registry: the providers there are (this build's by default).
    """

    def __init__(self, settings: Mapping[str, ProviderSettings], ctx: ProviderContext | None = None, *,
                 registry: Registry = REGISTRY) -> None:
        self._settings = settings
        self.ctx = ctx or ProviderContext()
        self.registry = registry
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
                s = spec(name, self.registry)
                base = self._settings.get(name) or s.settings_cls()
                settings = base.for_account(account)
                self._built[name, account] = s.factory(settings, account, self.context_for(settings))
            return self._built[name, account]

    def context_for(self, settings: ProviderSettings) -> ProviderContext:
        """The shared context, with the account's own timeout (POLLER_<P>__TIMEOUT_SECONDS) if it has one."""
        if settings.timeout_seconds is None:
            return self.ctx
        return replace(self.ctx, http=replace(self.ctx.http, timeout_s=settings.timeout_seconds))

    def timeout_of(self, name: str, account: str = DEFAULT_ACCOUNT) -> float:
        """The total deadline of one call to ``account`` of provider ``name``, in seconds."""
        try:
            return self.context_for(self.get(name, account).settings).http.timeout_s
        except Exception:  # noqa: BLE001 - an unknown or broken provider fails in its fetch, where it lands
            return self.ctx.http.timeout_s
