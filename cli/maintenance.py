"""`poller prune`: remove history older than the retention settings."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from worker.retention import TABLES


def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be removed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The counts as one JSON object.")] = False,
) -> None:
    """Remove events, snapshots, delivery attempts and finished items older than the
    POLLER_RETENTION_* settings, in short batches (polling and delivery go on meanwhile).
    Events a subscriber has not yet received, and each item's latest snapshot, always stay."""
    from cli.context import settings as _settings
    from config.wiring import current_engine, retention_for

    settings = _settings()
    current_engine(settings)
    service = retention_for(settings)
    counts = service.plan() if dry_run else service.prune()
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "removed" if not dry_run else "would_remove": counts}))
        return
    verb = "would remove" if dry_run else "removed"
    width = max(len(t) for t in TABLES)
    for table in TABLES:
        typer.echo(f"{table:<{width}}  {verb} {counts[table]}")


def register(main: typer.Typer) -> None:
    """Add `poller prune` to the main app."""
    main.command()(prune)
