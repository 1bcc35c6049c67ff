"""Settings shared by every provider: one account at the top level, more under ``accounts``.

``POLLER_BILLIT__API_KEY`` configures the ``default`` account; ``POLLER_BILLIT__ACCOUNTS__ACME__API_KEY``
configures account ``acme``, inheriting every setting it does not override (the base URL, say).
Credentials live here, never on item rows.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from worker.discovery import parse_filter
from worker.errors import ConfigurationError

#: The account an item belongs to when ``track`` names none.
DEFAULT_ACCOUNT = "default"


class ProviderSettings(BaseModel):
    """Base of each provider's settings model."""

    # An infinite timeout or rate is accepted by every comparison and breaks the first call.
    model_config = ConfigDict(allow_inf_nan=False)

    #: The provider name, for messages and environment variable names.
    NAME: ClassVar[str] = ""

    #: What an account needs before it can be polled, one entry per need: a setting, or
    #: alternatives ``"api_key | client_id + client_secret"`` (this one, or all of those).
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    base_url: str = ""
    #: Overrides POLLER_HTTP_TIMEOUT_SECONDS for this provider.
    timeout_seconds: float | None = Field(None, gt=0)
    #: Calls per second allowed to this provider, shared by all workers (None = unlimited).
    rate_limit_per_second: float | None = Field(5.0, gt=0)
    #: How many calls may go at once before the rate applies.
    rate_limit_burst: int = Field(10, ge=1)
    #: Pushes (POST /ingress/...) believed per second from this account, and how many at once;
    #: more are answered 429 (each believed push costs a poll).
    push_rate_per_second: float = Field(10.0, gt=0)
    push_burst: int = Field(100, ge=1)
    #: More accounts of the same provider, by name: each a partial override of these settings.
    accounts: dict[str, dict[str, Any]] = {}

    @field_validator("base_url", "auth_url", check_fields=False)
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Empty means "not configured": `require` names it when the account is used.
        return check_http_url(value) if value else value

    @classmethod
    def env_name(cls, field: str, account: str = DEFAULT_ACCOUNT) -> str:
        """The environment variable that sets ``field`` for ``account``."""
        prefix = f"POLLER_{cls.NAME.upper()}__"
        if account != DEFAULT_ACCOUNT:
            prefix += f"ACCOUNTS__{account.upper()}__"
        return prefix + field.upper()

    def account_names(self) -> list[str]:
        """``default`` and every named account."""
        return [DEFAULT_ACCOUNT, *sorted(a for a in self.accounts if a != DEFAULT_ACCOUNT)]

    def for_account(self, account: str) -> Self:
        """These settings as seen by ``account``.

        Raises:
            ConfigurationError: no such account, or its overrides are invalid (naming the variable).
        """
        if account == DEFAULT_ACCOUNT:
            return self
        if account not in self.accounts:
            known = ", ".join(self.account_names())
            raise ConfigurationError(
                f"{self.NAME} has no account {account!r} (known: {known}); configure it with "
                f"{self.env_name('<setting>', account)}")
        merged = self.model_dump(exclude={"accounts"})
        for key, value in merged.items():
            if isinstance(value, SecretStr):
                merged[key] = value.get_secret_value()
        merged.update(self.accounts[account])
        try:
            return type(self).model_validate(merged)
        except ValidationError as err:
            problems = "; ".join(f"{self.env_name(str(e['loc'][0]), account)}: "
                                 f"{str(e['msg']).removeprefix('Value error, ')}" for e in err.errors())
            raise ConfigurationError(f"invalid settings for {self.NAME} account {account!r}: {problems}") from None

    def missing(self, account: str = DEFAULT_ACCOUNT) -> list[str]:
        """The variables still to set before ``account`` can be polled (empty when it is configured)."""
        out = []
        for need in self.REQUIRED:
            options = [[f.strip() for f in option.split("+")] for option in need.split("|")]
            if not any(all(getattr(self, f) for f in fields) for fields in options):
                out.append(" or ".join(" and ".join(self.env_name(f, account) for f in fields) for fields in options))
        return out

    def require(self, account: str, *fields: str) -> None:
        """Raise a ConfigurationError naming every unset variable among ``fields``."""
        missing = [self.env_name(f, account) for f in fields if not getattr(self, f)]
        if missing:
            raise ConfigurationError(f"{self.NAME} account {account!r} is not configured: set {', '.join(missing)}")


class SweepingSettings(ProviderSettings):
    """Settings of a provider whose change list the poller can read (worker.sweeps)."""

    #: Read the provider's change list this often; 0 = never (poll each item on its own).
    sweep_seconds: float = Field(0.0, ge=0)
    #: While the account's sweeps are healthy, poll each item at most this often (worker.reconcile);
    #: 0 = each item at its own interval.
    reconcile_seconds: float = Field(0.0, ge=0)

    #: Track what a sweep lists that nobody tracks (label source=discovered, worker.discovery) ...
    discover: bool = False
    #: ... when its listed fields pass this filter (``OrderType eq 'Invoice' and ...``; empty: all).
    discover_filter: str = ""

    @field_validator("discover_filter")
    @classmethod
    def _discover_filter(cls, value: str) -> str:
        parse_filter(value)
        return value

    @field_validator("reconcile_seconds")
    @classmethod
    def _reconcile_needs_sweeps(cls, value: float, info: ValidationInfo) -> float:
        # Without sweeps nothing would find the changes the long interval skips.
        if value and not info.data.get("sweep_seconds"):
            raise ValueError(f"needs {cls.env_name('sweep_seconds')} set too (the sweep finds the changes "
                             "between the rare polls)")
        return value


def check_http_url(value: str) -> str:
    """``value`` if it is an ``http(s)://host[:port]/...`` URL.

    Raises:
        ValueError: another scheme, no host, a bad port or whitespace (the value is not quoted).
    """
    rule = "must be an http:// or https:// URL with a host, e.g. https://api.example.com"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - reading the port raises ValueError when it is not a number in range
    except ValueError:
        raise ValueError(rule) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValueError(rule)
    return value


def secret(value: SecretStr | None) -> str:
    """The plain value of a secret setting that ``require`` has checked."""
    assert value is not None
    return value.get_secret_value()
