"""Secrets at rest: webhook secrets and provider tokens are stored encrypted with Fernet.

Keys come from ``POLLER_SECRET_KEYS`` (newest first), else from ``{home}/secret.key``, generated
once for the embedded SQLite setup. The newest key encrypts; every key decrypts, so a key is
rotated by adding a new one in front, re-encrypting (`poller secrets rotate-key`), then dropping
the old one.

The keyring is per process: a process serves one deployment, so config.wiring installs its keys
before making the engine (Celery's prefork children inherit them and install the same again).
A Keyring is immutable and installing one is a single assignment, so threads need no lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Connection, Dialect, Text, column, select, table, update
from sqlalchemy.exc import DontWrapMixin
from sqlalchemy.types import TypeDecorator

from worker.errors import ConfigurationError

#: Marks an encrypted value, so legacy plaintext (before migration 0006) is told apart.
PREFIX = "fernet:"
#: The setting that holds the keys, named in every error.
SETTING = "POLLER_SECRET_KEYS"
#: Every encrypted column: table -> (primary key, columns).
SECRET_COLUMNS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "subscriptions": ("id", ("secret", "previous_secret")),
    "credentials": ("key", ("refresh_token", "access_token")),
    "provider_webhooks": ("id", ("secret",)),
}


class SecretKeyError(ConfigurationError, DontWrapMixin):
    """The keys cannot encrypt or decrypt a stored secret.

    DontWrapMixin: raised inside SQLAlchemy's value processing, it reaches the caller as itself
    (a clear configuration error) instead of a StatementError.
    """


class Keyring:
    """Fernet keys, newest first: the newest encrypts, any of them decrypts."""

    def __init__(self, keys: Sequence[str], source: str = SETTING) -> None:
        try:
            self._fernet = MultiFernet(_fernets(keys))
        except ValueError as err:
            raise SecretKeyError(f"{source}: {err}") from None
        self.source = source
        self.count = len(keys)

    @classmethod
    def parse(cls, value: str, source: str = SETTING) -> Keyring:
        """Keys separated by commas or whitespace, newest first."""
        return cls(split_keys(value), source)

    def encrypt(self, plain: str) -> str:
        """``plain`` encrypted with the newest key, prefixed."""
        return PREFIX + self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, stored: str) -> str:
        """The plain value; legacy plaintext is returned as it is (rotate-key encrypts it).

        Raises:
            SecretKeyError: no key decrypts it (the message names the setting, never the value).
        """
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise self._unreadable() from None

    def rotate(self, stored: str) -> str:
        """``stored`` encrypted with the newest key (legacy plaintext gets encrypted)."""
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise self._unreadable() from None

    def _unreadable(self) -> SecretKeyError:
        return SecretKeyError(
            f"a stored secret cannot be decrypted with the keys in {self.source}: it was encrypted with "
            f"a key that is not there (put the previous key back after the new one in {SETTING})")


def _fernets(keys: Sequence[str]) -> list[Fernet]:
    if not keys:
        raise ValueError("holds no key; `poller secrets new-key` prints one")
    fernets = []
    for n, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key.strip()))
        except (ValueError, TypeError):
            # Never echo the value: it may be a real key with a typo.
            raise ValueError(f"key {n} is not a Fernet key (44 characters of url-safe base64; "
                             "`poller secrets new-key` prints one)") from None
    return fernets


def split_keys(value: str) -> list[str]:
    """Keys separated by commas or whitespace."""
    return [k for k in re.split(r"[,\s]+", value) if k]


def check_keys(value: str) -> str:
    """``value`` when it holds one or more Fernet keys (settings validation).

    Raises:
        ValueError: which key is malformed, without the key.
    """
    _fernets(split_keys(value))
    return value


def new_key() -> str:
    """A fresh random Fernet key."""
    return Fernet.generate_key().decode()


_keyring: Keyring | None = None


def install(keyring: Keyring | None) -> Keyring | None:
    """Make ``keyring`` the process's keyring; returns the one it replaces (tests restore it)."""
    global _keyring
    previous, _keyring = _keyring, keyring
    return previous


def installed() -> Keyring:
    """The process's keyring.

    Raises:
        SecretKeyError: none was installed.
    """
    if _keyring is None:
        raise SecretKeyError(f"no secret key is configured: set {SETTING}")
    return _keyring


def keyring_from(keys: str | None, key_file: Path, *, create: bool) -> Keyring:
    """The keys of ``POLLER_SECRET_KEYS`` when set, else those of ``key_file``.

    Args:
        keys: the setting's value, or None when unset.
        key_file: ``{home}/secret.key``.
        create: generate the key file when missing. Only for a database on this machine (SQLite):
            with a shared database every host must have the same key, so a generated one would
            lock the others out of the secrets it writes.

    Raises:
        SecretKeyError: a malformed key, or no key and the file may not be created.
    """
    if keys is not None:
        return Keyring.parse(keys)
    if not key_file.exists():
        if not create:
            raise SecretKeyError(
                f"{SETTING} is not set and {key_file} does not exist: with a shared database every host needs "
                "the same key; `poller secrets new-key` prints one")
        _create_key_file(key_file)
    return Keyring.parse(key_file.read_text(), f"{key_file} ({SETTING} is unset)")


def _create_key_file(path: Path) -> None:
    """Write a new key to ``path`` (0600), atomically, keeping a key another process made first."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")
            f.flush()
            os.fsync(f.fileno())
        # A hard link never replaces an existing file: two first runs at once agree on one key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class EncryptedText(TypeDecorator[str]):
    """Text stored encrypted with the process's keyring; the code reads and writes plain strings."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else installed().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else installed().decrypt(value)


def rewrite_secrets(conn: Connection, mode: Literal["rotate", "encrypt", "decrypt"] = "rotate", *,
                    keyring: Callable[[], Keyring] = installed,
                    columns: Mapping[str, tuple[str, tuple[str, ...]]] = SECRET_COLUMNS) -> int:
    """Rewrite every stored secret; returns how many values changed.

    Reads the raw column values (not through EncryptedText), so a value no key decrypts fails
    the whole run before anything is committed. Each update is a compare-and-set on the old
    value: a token a running worker rotated meanwhile is kept (it was written with the new key).

    Args:
        conn: a connection inside the caller's transaction.
        mode: ``rotate`` encrypts everything with the newest key (`poller secrets rotate-key`),
            ``encrypt`` only legacy plaintext (migration 0006), ``decrypt`` writes plaintext back
            (its downgrade).
        keyring: gives the keys; called only when a value needs them, so migrating an empty
            database needs no key.
        columns: table -> (primary key, columns), frozen by a migration that calls this.
    """
    rewritten = 0
    for name, (pk, cols) in columns.items():
        t = table(name, column(pk), *(column(c, Text) for c in cols))
        for row in conn.execute(select(t)).mappings().all():
            for c in cols:
                old = row[c]
                if old is None or (mode == "encrypt" and old.startswith(PREFIX)) or (
                        mode == "decrypt" and not old.startswith(PREFIX)):
                    continue
                new = keyring().decrypt(old) if mode == "decrypt" else keyring().rotate(old)
                rewritten += conn.execute(
                    update(t).where(t.c[pk] == row[pk], t.c[c] == old).values({c: new})).rowcount
    return rewritten
