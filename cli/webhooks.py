"""`poller webhooks ...`, `poller deliveries`, `poller replay`, `poller redeliver`."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from worker.dates import iso_z, parse_iso
from worker.errors import InputError
from worker.subscriptions import Subscriptions, subscription_dict

app = typer.Typer(help="Manage webhook subscriptions.", no_args_is_help=True)


def _subs() -> Subscriptions:
    from cli.context import service as _service
    from cli.context import settings as _settings
    from config.wiring import subscriptions_for

    _service()  # the schema must be current (only `poller migrate`, `run` and `worker` migrate)
    return subscriptions_for(_settings())


def _csv(values: list[str] | None) -> list[str] | None:
    out = [v.strip() for value in values or [] for v in value.split(",") if v.strip()]
    return out or None


@app.command("add")
def add(
    url: Annotated[str, typer.Argument(help="https:// endpoint that receives the events.")],
    types: Annotated[list[str] | None, typer.Option("--types", help="Event types (comma-separated or repeated); all when omitted.")] = None,  # noqa: E501
    provider: Annotated[list[str] | None, typer.Option("--provider", help="Only these providers; all when omitted.")] = None,  # noqa: E501
    label: Annotated[list[str] | None, typer.Option("--label", metavar="KEY=VALUE", help="Only events of items with this label (repeatable: all of them).")] = None,  # noqa: E501
) -> None:
    """Subscribe an endpoint; prints its id and its signing secret (shown once)."""
    from cli.imports import parse_label

    labels = dict(parse_label(text) for text in label) if label else None
    sub, secret = _subs().add(url, types=_csv(types), providers=_csv(provider), labels=labels)
    typer.echo(f"subscription {sub.id}")
    typer.echo(f"secret {secret}")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Subscriptions with their state and deliveries by state (secrets are never shown again)."""
    rows = [subscription_dict(s, c) for s, c in _subs().all()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r["deliveries"].items())) or "no deliveries"
        filters = f" types={','.join(r['event_types'])}" if r["event_types"] else ""
        filters += f" providers={','.join(r['providers'])}" if r["providers"] else ""
        reason = f" ({r['disabled_reason']})" if r["disabled_reason"] else ""
        typer.echo(f"{r['id']}  {r['kind']:<7} {r['state']}{reason}  {r['url']}{filters}  [{counts}]")


@app.command()
def disable(sub_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop delivering to a subscription; its deliveries wait, nothing is dropped."""
    _subs().set_enabled(sub_id, False)
    typer.echo(f"disabled subscription {sub_id}")


@app.command()
def enable(sub_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Deliver to a subscription again, starting with what waited."""
    _subs().set_enabled(sub_id, True)
    typer.echo(f"enabled subscription {sub_id}")


@app.command()
def remove(sub_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Delete a subscription, its pending deliveries and their history."""
    _subs().remove(sub_id)
    typer.echo(f"removed subscription {sub_id}")


@app.command("rotate-secret")
def rotate_secret(
    sub_id: Annotated[int, typer.Argument(metavar="ID")],
    grace: Annotated[str | None, typer.Option(help="How long the old secret keeps signing (e.g. 24h).")] = None,
) -> None:
    """A new signing secret; the old one signs alongside it for the grace period."""
    from cli.context import settings as _settings
    from config.validation import duration_seconds

    settings = _settings()
    try:
        period = timedelta(seconds=duration_seconds(grace)) if grace is not None else settings.secret_grace()
    except ValueError as err:
        raise InputError(f"--grace {err}") from None
    secret = _subs().rotate_secret(sub_id, period)
    typer.echo(f"secret {secret}")
    typer.echo(f"the previous secret keeps signing for {period}")


def register(main: typer.Typer) -> None:
    """Add these commands to the main CLI."""
    main.add_typer(app, name="webhooks")

    @main.command()
    def deliveries(
        event: Annotated[str | None, typer.Option(help="Only this event id.")] = None,
        subscription: Annotated[int | None, typer.Option(help="Only this subscription.")] = None,
        failed: Annotated[bool, typer.Option("--failed", help="Only deliveries that failed for good.")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Deliveries with every attempt: time, status, latency, response excerpt or error."""
        if event is not None:
            from cli.context import service as _service

            _service().event_position(event)  # an unknown id is an error, not an empty list
        views = _subs().deliveries(event_id=event, subscription_id=subscription, failed=failed)
        for v in views:
            d = v.delivery
            attempts = [{"at": iso_z(a.attempted_at), "status": a.status_code, "latency_ms": a.latency_ms,
                         "outcome": a.outcome, "fault": a.fault, "error": a.error,
                         "response": a.response_excerpt} for a in v.attempts]
            if as_json:
                typer.echo(json.dumps({"id": d.id, "event_id": v.event.id, "type": v.event.type,
                                       "subscription_id": d.subscription_id, "state": d.state,
                                       "attempts": attempts, "next_attempt_at": iso_z(d.next_attempt_at)}))
                continue
            typer.echo(f"delivery {d.id}  event {v.event.id} ({v.event.type})  subscription {d.subscription_id}  "
                       f"{d.state}  next {iso_z(d.next_attempt_at) or '-'}")
            for a in attempts:
                detail = a["error"] or (a["response"] or "")[:80].replace("\n", " ")
                typer.echo(f"    {a['at']}  {a['status'] or '---'}  {a['latency_ms']:.1f} ms  {a['outcome']}"
                           + (f" ({a['fault']})" if a["fault"] else "") + (f"  {detail}" if detail else ""))

    @main.command()
    def replay(
        since: Annotated[str, typer.Option(help="ISO 8601 time (UTC if no offset), e.g. 2026-11-23T10:00.")],
        subscription: Annotated[int | None, typer.Option(help="Only to this subscription.")] = None,
    ) -> None:
        """Send every event since a time again, with the same webhook-id (receivers dedupe)."""
        try:
            when = parse_iso(since)
        except ValueError:
            raise InputError(f"--since must be an ISO 8601 time, got {since!r}") from None
        typer.echo(f"queued {_subs().replay(when, subscription)} deliveries")

    @main.command()
    def redeliver(
        event_id: Annotated[str, typer.Argument(metavar="EVENT_ID")],
        subscription: Annotated[int | None, typer.Option(help="Only to this subscription.")] = None,
    ) -> None:
        """Send one event again to its subscriptions."""
        typer.echo(f"queued {_subs().redeliver(event_id, subscription)} deliveries")
