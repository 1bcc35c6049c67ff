"""One poll as it goes through a chunk (worker.polling), and what a batch of polls did."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from worker.documents import document_digest
from worker.domain import PollOutcome, StatusDocument
from worker.errors import ProviderError
from worker.store.models import Event
from worker.store.repo import PollWork


@dataclass
class PollReport:
    """Counts of what one batch of polls did (for logs and metrics)."""

    polled: int = 0
    changed: int = 0
    failed: int = 0
    gone: int = 0
    lost_lease: int = 0
    skipped: int = 0
    deferred: int = 0
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass
class Poll:
    """One item's poll as it goes through the chunk."""

    unit: PollWork
    wait_s: float = 0.0
    probe: bool = False
    doc: StatusDocument | None = None
    error: ProviderError | None = None
    internal: bool = False  # our own failure (a bug, a write), counted as outcome "error"
    counted: bool = False  # admitted by the guard: its outcome counts for the breaker
    seconds: float = 0.0
    started_at: datetime | None = None  # when its call went out: the next one is due an interval later
    outcome: PollOutcome | None = None
    written: list[Event] | None = None
    not_modified: bool = False  # the provider said so, and the latest snapshot was not read yet
    digest: str | None = None  # of ``doc``, once worked out (worker.documents.document_digest)

    def doc_digest(self) -> str | None:
        """The digest of the document found, None for a failed poll."""
        if self.digest is None and self.doc is not None and self.error is None:
            try:
                self.digest = document_digest(self.doc)
            except (TypeError, ValueError):  # not strict JSON: it cannot be stored either, and that lands on its item
                return None
        return self.digest
