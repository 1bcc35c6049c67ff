"""The one error hierarchy of worker/, grouped by how an error is handled.

- ConfigurationError: the deployment is wrong; fail at boot or name the setting to fix.
- ProviderUnavailable: transient (timeout, connection, 5xx, 429); retry with backoff.
- ProviderResponseInvalid: the provider answered something we cannot use (4xx, bad JSON,
  schema drift); retrying soon will not help, so retry slowly and alert.
- ProviderMisconfigured: a setting of this provider account is missing or wrong (our fault, not
  the provider's); alert at once.
- PollNotStored: the provider answered but its result could not be stored; back off, alert.
- ItemGone: the provider says the item does not exist; stop polling it.
- InputError: a user gave bad input (CLI, settings file); say what was wrong, store nothing.
"""

from __future__ import annotations


class PollerError(Exception):
    """Root of every error raised by worker/."""


class ConfigurationError(PollerError):
    """A setting is missing or invalid; the message names the variable to set."""


class InputError(PollerError):
    """Bad input from a user; nothing was stored. ``field`` names the field or parameter at fault
    when there is one (the API's problem documents name it)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TargetRefused(InputError):
    """Our own policy refuses a webhook target (http, a private or metadata address).

    ``setting`` names the setting that would allow it, or is None when nothing may.
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DuplicateItemError(InputError):
    """The provider, account, kind and ref are already tracked."""

    def __init__(self, message: str, existing_id: int) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class NotFound(InputError):
    """The id names nothing stored (an item, event, subscription or delivery)."""


class ItemNotFoundError(NotFound):
    """No tracked item has that id."""


class CursorExpired(InputError):
    """An events cursor points before what retention kept: reading on would silently skip the
    removed events. The message names the oldest retained event."""


class Conflict(InputError):
    """The request is valid but the stored state does not allow it (e.g. pausing a finished item)."""


class ProviderError(PollerError):
    """A provider call failed. Carries the provider, the HTTP status and a short body excerpt."""

    #: Whether a quick retry can help (drives backoff); overridden by subclasses.
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        body_excerpt: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = f"{self.provider}: {self.message}"
        if self.body_excerpt:
            # One line, whitespace collapsed: an HTML error page stays readable in `poller items`.
            text += f" (body: {' '.join(self.body_excerpt.split())[:120]!r})"
        return text


class ProviderUnavailable(ProviderError):
    """Timeout, connection error, 5xx or 429: retry with backoff, honouring Retry-After."""

    retryable = True


class ProviderResponseInvalid(ProviderError):
    """Other 4xx, unparseable or schema-drifted body: a quick retry will not help."""


class ProviderMisconfigured(ProviderError):
    """A setting of the provider account is missing or invalid: nothing works until a person fixes it.

    Our fault, not the provider's (it is no ProviderResponseInvalid, and its poll counts as outcome
    ``error``); like one, a quick retry will not help.
    """


class PollNotStored(ProviderError):
    """The poll's result could not be written (a constraint, a value the database refuses, a bug).

    Counted like a transient failure (backoff from the base, ``poll.failing`` after the usual
    count): the cause may be passing (a busy database) or already repaired by the failure path.
    """

    retryable = True


def is_credential_failure(error: ProviderError) -> bool:
    """Whether the provider refused our credentials (a 401 after one re-authentication) or the
    account's settings are wrong: every item of the account fails until a person acts.

    A 403 is not counted: it may forbid one item only, and would make the account's alert flap.
    """
    return isinstance(error, ProviderMisconfigured) or error.status_code == 401


def describe_exception(err: BaseException, limit: int = 300) -> str:
    """A short, one-line cause. For database errors, the driver's message without the SQL
    statement and parameters (they may hold a whole provider body, or a secret)."""
    orig = getattr(err, "orig", None)  # SQLAlchemy's wrapper names the kind alike on every database
    text = f"{type(err).__name__}: {orig if orig is not None else err}"
    return " ".join(text.split())[:limit]


class ItemGone(ProviderError):
    """The provider says the item no longer exists (404): stop polling it."""
