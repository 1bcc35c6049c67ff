"""The webhooks the poller registers with a provider, so that it pushes to our ingress (issue 14).

`poller providers webhooks sync billit [--account A]` makes Billit push its ``Order`` and
``Message`` updates (``EntityUpdateType`` ``U``) to ``POLLER_PUBLIC_URL/ingress/billit/<account>``:
it lists the account's webhooks (``GET /v1/webhooks``), keeps the ones it registered before,
registers what is missing (``POST /v1/webhooks``, whose answer carries the webhook's secret), and
deletes the ones it made at an older public URL. The secrets are stored encrypted
(``provider_webhooks.secret``); the ingress believes a push signed with any of them, or with
``POLLER_BILLIT__WEBHOOK_SECRET`` (a webhook registered by hand). ``--remove`` deletes the webhooks
it made and forgets the rest.

A webhook at our URL whose secret we do not know (made by hand, or by a run whose database was
lost) is not replaced behind the operator's back: the sync names it and fails, unless
``POLLER_BILLIT__WEBHOOK_SECRET`` is set for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from worker.clock import utcnow
from worker.errors import ConfigurationError, InputError
from worker.providers.registry import ProviderSet
from worker.store.models import ProviderWebhook

log = structlog.get_logger(__name__)

#: What each provider with a webhooks API is asked to push: ``"<EntityType> <EntityUpdateType>"``.
WANTED: dict[str, tuple[str, ...]] = {"billit": ("Order U", "Message U")}


@dataclass(frozen=True)
class Remote:
    """A webhook as the provider lists it (``secret`` only if the listing shows it)."""

    remote_id: str
    topic: str
    url: str
    secret: str | None = None


@dataclass(frozen=True)
class Stored:
    """A webhook as we remember it."""

    remote_id: str
    url: str
    made: bool


@dataclass
class Plan:
    """What a sync does (decided by :func:`plan_sync`, from its arguments only)."""

    keep: list[Remote] = field(default_factory=list)
    create: list[str] = field(default_factory=list)  # topics
    adopt: list[Remote] = field(default_factory=list)  # found at our URL with their secret
    delete: list[str] = field(default_factory=list)  # ours, at an old URL: deleted at the provider
    forget: list[str] = field(default_factory=list)  # gone at the provider, or adopted at an old URL
    by_hand: list[Remote] = field(default_factory=list)  # at our URL, verified with the configured secret
    unknown: list[Remote] = field(default_factory=list)  # at our URL, secret unknown: the sync fails


def plan_sync(listed: Sequence[Remote], stored: Sequence[Stored], url: str, wanted: Sequence[str], *,
              hand_secret: bool) -> Plan:
    """Decide a sync: one webhook per wanted topic at ``url`` whose pushes we can verify."""
    plan = Plan()
    mine = {s.remote_id: s for s in stored}
    listed_ids = {r.remote_id for r in listed}
    plan.forget = [s.remote_id for s in stored if s.remote_id not in listed_ids]
    for r in listed:
        if r.remote_id in mine and r.url != url:
            (plan.delete if mine[r.remote_id].made else plan.forget).append(r.remote_id)
    for topic in wanted:
        here = [r for r in listed if r.url == url and r.topic == topic]
        ours = [r for r in here if r.remote_id in mine]
        adoptable = [r for r in here if r.secret]
        if ours:
            plan.keep.append(ours[0])
        elif adoptable:
            plan.adopt.append(adoptable[0])
        elif here:
            (plan.by_hand if hand_secret else plan.unknown).extend(here)
        else:
            plan.create.append(topic)
    return plan


@dataclass
class SyncReport:
    """One line per webhook acted on or found; ``problems`` make the command fail."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class ProviderWebhooks:
    """Registers, finds and removes the provider webhooks that push to our ingress.

    Args:
        sessions: the database (the registered webhooks and their encrypted secrets).
        providers: the configured provider accounts.
        public_url: where the providers reach our HTTP API (POLLER_PUBLIC_URL), or None.
    """

    def __init__(self, sessions: sessionmaker[Session], providers: ProviderSet, public_url: str | None, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.sessions, self.providers, self.public_url, self.clock = sessions, providers, public_url, clock

    def ingress_url(self, provider: str, account: str) -> str:
        """Where the provider pushes for ``account``."""
        if not self.public_url:
            raise ConfigurationError("set POLLER_PUBLIC_URL to the https:// address where the provider reaches "
                                     "the poller's HTTP API (the ingress is <that>/ingress/<provider>/<account>)")
        return f"{self.public_url.rstrip('/')}/ingress/{provider}/{account}"

    def sync(self, provider: str, account: str) -> SyncReport:
        """Make the provider push every wanted topic to our ingress, with secrets we keep."""
        adapter = self._adapter(provider, account)
        url = self.ingress_url(provider, account)
        listed = [_remote(h) for h in adapter.webhooks()]
        hand_secret = getattr(adapter.settings, "webhook_secret", None) is not None
        plan = plan_sync(listed, self._stored(provider, account), url, WANTED[provider], hand_secret=hand_secret)
        report = SyncReport()
        for remote_id in plan.delete:
            adapter.delete_webhook(remote_id)
            report.lines.append(f"deleted webhook {remote_id} (an older public URL)")
        self._forget(provider, account, plan.delete + plan.forget)
        report.lines += [f"forgot webhook {r} (no longer at {provider}, or adopted at an older URL)"
                         for r in plan.forget]
        report.lines += [f"kept webhook {r.remote_id} ({r.topic}) -> {r.url}" for r in plan.keep]
        report.lines += [f"found webhook {r.remote_id} ({r.topic}) registered by hand: its pushes are checked "
                         f"with {adapter.settings.env_name('webhook_secret', account)}" for r in plan.by_hand]
        for r in plan.adopt:
            self._store(provider, account, r.remote_id, r.topic, url, r.secret, made=False)
            report.lines.append(f"adopted webhook {r.remote_id} ({r.topic}) -> {url}")
        for topic in plan.create:
            entity, update_type = topic.split()
            hook = adapter.add_webhook(entity, update_type, url)
            # Stored at once: the secret is shown by this answer only.
            self._store(provider, account, str(hook["WebhookID"]), topic, url, str(hook["Secret"]), made=True)
            report.lines.append(f"registered webhook {hook['WebhookID']} ({topic}) -> {url}")
        report.problems += [
            f"webhook {r.remote_id} ({r.topic}) at {r.url} was not registered by this poller and its secret is "
            f"unknown: set {adapter.settings.env_name('webhook_secret', account)} to its secret, or delete it "
            f"at {provider} and sync again" for r in plan.unknown]
        log.info("provider_webhooks.synced", provider=provider, account=account, kept=len(plan.keep),
                 registered=len(plan.create), adopted=len(plan.adopt), deleted=len(plan.delete),
                 unknown=len(plan.unknown))
        return report

    def remove(self, provider: str, account: str) -> SyncReport:
        """Delete the webhooks this poller registered (at the provider too) and forget the adopted ones."""
        adapter = self._adapter(provider, account)
        report = SyncReport()
        for s in self._stored(provider, account):
            if s.made:
                gone = adapter.delete_webhook(s.remote_id)
                report.lines.append(f"deleted webhook {s.remote_id}"
                                    + ("" if gone else f" (already gone at {provider})"))
            else:
                report.lines.append(f"forgot webhook {s.remote_id} (adopted: left at {provider})")
            self._forget(provider, account, [s.remote_id])
        return report

    def secrets(self, provider: str, account: str) -> list[str]:
        """The secrets of the account's registered webhooks (the ingress checks pushes against them)."""
        with self.sessions.begin() as s:
            return [v for v in s.scalars(select(ProviderWebhook.secret).where(
                ProviderWebhook.provider == provider, ProviderWebhook.account == account)) if v]

    # -- the store ------------------------------------------------------------------------

    def _adapter(self, provider: str, account: str) -> Any:
        if provider not in WANTED:
            raise InputError(f"{provider} has no webhooks API to register with (providers that have one: "
                             f"{', '.join(WANTED)}); see docs/pushes.md for its pushes")
        return self.providers.get(provider, account)

    def _stored(self, provider: str, account: str) -> list[Stored]:
        with self.sessions.begin() as s:
            return [Stored(r.remote_id, r.url, r.made) for r in s.scalars(select(ProviderWebhook).where(
                ProviderWebhook.provider == provider, ProviderWebhook.account == account))]

    def _store(self, provider: str, account: str, remote_id: str, topic: str, url: str, secret: str | None, *,
               made: bool) -> None:
        with self.sessions.begin() as s:
            s.add(ProviderWebhook(provider=provider, account=account, remote_id=remote_id, topic=topic, url=url,
                                  secret=secret, made=made, created_at=self.clock()))

    def _forget(self, provider: str, account: str, remote_ids: Sequence[str]) -> None:
        if remote_ids:
            with self.sessions.begin() as s:
                s.execute(delete(ProviderWebhook).where(ProviderWebhook.provider == provider,
                                                        ProviderWebhook.account == account,
                                                        ProviderWebhook.remote_id.in_(list(remote_ids))))


def _remote(hook: dict[str, Any]) -> Remote:
    """A listed Billit webhook (https://docs.billit.be/docs/webhooks)."""
    secret = hook.get("Secret")
    return Remote(str(hook.get("WebhookID")), f"{hook.get('EntityType')} {hook.get('EntityUpdateType')}",
                  str(hook.get("WebhookURL") or ""), str(secret) if secret else None)
