"""`poller keys ...`: the HTTP API's keys (`Authorization: Bearer KEY`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from worker.apikeys import ApiKeys
from worker.dates import iso_z
from worker.store.models import ApiKey

app = typer.Typer(help="API keys of the HTTP API (Authorization: Bearer KEY).", no_args_is_help=True)


def _keys() -> ApiKeys:
    from cli.context import settings as _settings
    from config.wiring import current_engine, sessions_for

    settings = _settings()
    current_engine(settings)  # only `poller migrate`, `run` and `worker` change the schema
    return ApiKeys(sessions_for(settings))


def key_dict(row: ApiKey) -> dict[str, Any]:
    """A key as `poller keys list --json` shows it: never the key, only its first characters."""
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "read_only": row.read_only,
            "created_at": iso_z(row.created_at), "last_used_at": iso_z(row.last_used_at),
            "revoked_at": iso_z(row.revoked_at)}


def _access(read_only: bool) -> str:
    return "read-only" if read_only else "read-write"


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="Who uses the key, e.g. invoicing.")],
    read_only: Annotated[bool, typer.Option("--read-only", help="May read, never write (403).")] = False,
) -> None:
    """Make a key and print it once, as the last word of the output (only its digest is stored)."""
    row, key = _keys().create(name, read_only=read_only)
    typer.echo(f'created key {row.id} "{row.name}" ({_access(row.read_only)}), shown only this once: {key}')


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="A JSON array.")] = False) -> None:
    """Every key with its prefix, access, creation, last use and revocation (never the key)."""
    rows = [key_dict(r) for r in _keys().all()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = [("ID", "NAME", "PREFIX", "ACCESS", "CREATED", "LAST USED", "REVOKED")] + [
        (str(r["id"]), r["name"], r["prefix"] + "...", _access(r["read_only"]), _short(r["created_at"]),
         _short(r["last_used_at"]), _short(r["revoked_at"])) for r in rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    for r in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _short(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


@app.command()
def revoke(ref: Annotated[str, typer.Argument(metavar="ID|NAME", help="The key's id or name.")]) -> None:
    """Revoke a key: every request with it gets 401 from now on."""
    row = _keys().revoke(ref)
    typer.echo(f'revoked key {row.id} "{row.name}"')


def register(main: typer.Typer) -> None:
    """Add `poller keys` to the main CLI."""
    main.add_typer(app, name="keys")
