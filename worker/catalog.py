"""The item catalog: what the HTTP API and the CLI do with items (upsert one or many, list with
filters and cursors, change, untrack, poll now). Input is checked here, once for both."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from worker.clock import utcnow
from worker.domain import ItemState
from worker.errors import ConfigurationError, Conflict, InputError
from worker.providers.registry import ProviderSet
from worker.store import items as store
from worker.store import repo
from worker.store.models import Item, Snapshot

log = structlog.get_logger(__name__)

#: Shortest and longest poll interval a user may ask for, in seconds.
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 31 * 24 * 3600.0
#: "0.1 s to 31 days": the range in words, for error messages.
INTERVAL_RANGE = f"{MIN_INTERVAL_S:g} s to {MAX_INTERVAL_S / 86400:g} days"
#: A label key: letters, digits and ``_ . - /``, starting with a letter or digit; no ``:`` so that
#: the filter syntax ``key:value`` is never ambiguous.
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,99}")
MAX_LABELS = 20
MAX_LABEL_VALUE = 200
MAX_EXTERNAL_ID = 200
MAX_BATCH = 10_000


@dataclass(frozen=True)
class ItemSpec:
    """An item as a client describes it. ``None`` means "not given"."""

    provider: str
    ref: str
    kind: str | None = None
    account: str | None = None
    interval_s: float | None = None
    labels: dict[str, str] | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class Refused:
    """A batch entry that was not stored, and why."""

    error: InputError


def check_interval(value: float, field: str = "interval_seconds") -> float:
    """``value`` when it is a usable interval, else an InputError saying the range in words."""
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
        raise InputError(f"{field} must be {INTERVAL_RANGE}, got {value:g} s", field=field)
    return float(value)


def check_labels(labels: dict[str, Any], field: str = "labels") -> dict[str, str]:
    """The labels, or an InputError naming the key or value at fault."""
    if len(labels) > MAX_LABELS:
        raise InputError(f"at most {MAX_LABELS} labels, got {len(labels)}", field=field)
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
            raise InputError(f"label key {key!r} must be 1 to 100 letters, digits or _ . - / "
                             "(starting with a letter or digit)", field=f"{field}.{key}")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or any(ord(c) < 32 for c in value):
            raise InputError(f"label {key!r} must be a string of at most {MAX_LABEL_VALUE} printable characters",
                             field=f"{field}.{key}")
    return dict(labels)


def parse_label_filter(text: str) -> tuple[str, str]:
    """``key:value`` as a pair, or an InputError naming the ``label`` parameter."""
    key, sep, value = text.partition(":")
    if not sep or not LABEL_KEY.fullmatch(key):
        raise InputError(f"label filter {text!r} must be key:value (e.g. customer:acme)", field="label")
    return key, value


def encode_cursor(kind: str, position: int) -> str:
    """An opaque cursor: clients pass it back, never build it."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, field: str = "cursor") -> int:
    """The position in a cursor made by ``encode_cursor(kind, ...)``, or an InputError."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix == kind and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InputError(f"{field} {cursor!r} is not a cursor this API gave out; pass next_cursor as it came",
                     field=field)


class Catalog:
    """Items as clients manage them.

    Args:
        sessions: the poller's database.
        providers: the adapters (they check kinds and refs).
        default_interval_s: the interval of an item created without one.
        clock: wall clock (UTC).
    """

    def __init__(self, sessions: sessionmaker[Session], providers: ProviderSet, *, default_interval_s: float,
                 clock: Callable[[], datetime] = utcnow, reads: sessionmaker[Session] | None = None) -> None:
        self.sessions, self.providers, self.clock = sessions, providers, clock
        #: Sessions for what only reads (pages); read-only ones take no write lock.
        self.reads = reads or sessions
        self.default_interval_s = default_interval_s

    def check(self, spec: ItemSpec) -> store.Upsert:
        """Check an item as given; the stored form, or an InputError naming the field at fault.

        The provider account must be configured: an item that could never be polled is refused
        with the settings to set.
        """
        account = spec.account or "default"
        if not account or len(account) > 80:
            raise InputError("account must be 1 to 80 characters", field="account")
        try:
            adapter = self.providers.get(spec.provider, account)
        except InputError as err:
            raise InputError(str(err), field="provider") from None
        except ConfigurationError as err:
            raise InputError(str(err), field="account") from None
        missing = adapter.settings.missing(account)
        if missing:
            raise InputError(f"{spec.provider} account {account!r} is not configured: set {'; '.join(missing)}",
                             field="account")
        kind = spec.kind or adapter.kinds[0]
        if kind not in adapter.kinds:
            raise InputError(f"{spec.provider} has no kind {kind!r}; known: {', '.join(adapter.kinds)}", field="kind")
        try:
            ref = adapter.validate_ref(kind, spec.ref)
        except InputError as err:
            raise InputError(str(err), field="ref") from None
        interval = None if spec.interval_s is None else check_interval(spec.interval_s)
        labels = None if spec.labels is None else check_labels(spec.labels)
        if spec.external_id is not None and not 1 <= len(spec.external_id) <= MAX_EXTERNAL_ID:
            raise InputError(f"external_id must be 1 to {MAX_EXTERNAL_ID} characters", field="external_id")
        return store.Upsert((spec.provider, account, kind, ref), interval, self.default_interval_s,
                            labels=labels, external_id=spec.external_id)

    def upsert(self, spec: ItemSpec) -> tuple[Item, bool]:
        """Track an item, or update it when already tracked (interval, labels, external id).
        Returns the item and whether it was created."""
        row = self.check(spec)
        with self.sessions.begin() as session:
            [(item_id, created)] = store.upsert_items(session, [row], now=self.clock())
            item = repo.get_item(session, item_id)
        log.info("item.tracked" if created else "item.updated", item_id=item_id, provider=row.identity[0],
                 kind=row.identity[2], ref=row.identity[3])
        return item, created

    def upsert_many(self, specs: Sequence[ItemSpec]) -> list[tuple[int, bool] | Refused]:
        """Each spec upserted (in one transaction), or refused with its reason; results in order.
        A refused entry stores nothing; the others are stored."""
        if len(specs) > MAX_BATCH:
            raise InputError(f"at most {MAX_BATCH} items per batch, got {len(specs)}", field="items")
        checked: list[store.Upsert | Refused] = []
        for spec in specs:
            try:
                checked.append(self.check(spec))
            except InputError as err:
                checked.append(Refused(err))
        rows = [c for c in checked if isinstance(c, store.Upsert)]
        with self.sessions.begin() as session:
            done = iter(store.upsert_items(session, rows, now=self.clock()) if rows else [])
        results = [c if isinstance(c, Refused) else next(done) for c in checked]
        log.info("items.batch", total=len(specs), created=sum(1 for r in results if isinstance(r, tuple) and r[1]),
                 refused=sum(1 for r in results if isinstance(r, Refused)))
        return results

    def page(self, *, cursor: str | None, limit: int, provider: str | None = None, account: str | None = None,
             kind: str | None = None, state: str | None = None, external_id: str | None = None,
             labels: Sequence[str] = ()) -> tuple[list[Item], str | None]:
        """A page of items in id order and the cursor of the next page (None after the last)."""
        after = decode_cursor("items", cursor) if cursor else 0
        if state is not None and state not in {s.value for s in ItemState}:
            raise InputError(f"state must be one of {', '.join(s.value for s in ItemState)}", field="state")
        pairs = [parse_label_filter(text) for text in labels]
        with self.reads.begin() as session:
            rows = store.page_items(session, after_id=after, limit=limit + 1, provider=provider, account=account,
                                    kind=kind, state=state, external_id=external_id, labels=pairs)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor("items", rows[-1].id) if more else None

    def get(self, item_id: int) -> tuple[Item, Snapshot | None]:
        """An item with its latest snapshot."""
        with self.reads.begin() as session:
            return repo.get_item(session, item_id), repo.latest_snapshot(session, item_id)

    def snapshots(self, item_id: int, *, cursor: str | None, limit: int) -> tuple[list[Snapshot], str | None]:
        """An item's snapshots, newest first, and the cursor of the next (older) page."""
        before = decode_cursor("snapshots", cursor) if cursor else None
        with self.reads.begin() as session:
            repo.get_item(session, item_id)
            rows = store.page_snapshots(session, item_id, before_id=before, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor("snapshots", rows[-1].id) if more else None

    def change(self, item_id: int, *, interval_s: float | None = None, labels: dict[str, str] | None = None,
               external_id: str | None = None, paused: bool | None = None) -> Item:
        """Change an item's interval, labels, external id, or pause or resume it."""
        interval = None if interval_s is None else check_interval(interval_s)
        checked = None if labels is None else check_labels(labels)
        if external_id is not None and not 1 <= len(external_id) <= MAX_EXTERNAL_ID:
            raise InputError(f"external_id must be 1 to {MAX_EXTERNAL_ID} characters", field="external_id")
        now = self.clock()
        with self.sessions.begin() as session:
            if paused is not None:
                repo.set_paused(session, item_id, paused, now=now)
            item = repo.get_item(session, item_id, lock=interval is not None and paused is None)
            if interval is not None:
                store.set_interval(item, interval, now=now)
            if external_id is not None:
                item.external_id = external_id
            if checked is not None:
                item.labels = checked
                store.replace_labels(session, {item_id: checked})
            item.updated_at = now
            session.flush()
        if paused is not None:
            log.info("item.paused" if paused else "item.resumed", item_id=item_id)
        return item

    def untrack(self, item_id: int) -> Item:
        """Stop tracking an item; its events stay."""
        with self.sessions.begin() as session:
            item = repo.delete_item(session, item_id)
        log.info("item.untracked", item_id=item_id)
        return item

    def poll_now(self, item_id: int) -> tuple[Item, bool]:
        """Make an item due at the next dispatch tick. Returns the item and False when a poll of it
        is already under way. A paused or finished item is a Conflict."""
        now = self.clock()
        with self.sessions.begin() as session:
            item = repo.get_item(session, item_id, lock=True)
            if item.state != ItemState.ACTIVE.value:
                hint = "resume it first" if item.state in (ItemState.PAUSED.value, ItemState.GONE.value) else \
                    "it is finished"
                raise Conflict(f"item {item_id} is {item.state}; {hint}", field="id")
            scheduled = store.poll_now(item, now=now)
            session.flush()
            return item, scheduled
