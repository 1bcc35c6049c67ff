"""`poller secrets ...`: the keys that encrypt the secrets stored in the database."""

from __future__ import annotations

import typer

from worker.store import crypto

app = typer.Typer(help="Keys of the secrets stored in the database (POLLER_SECRET_KEYS).", no_args_is_help=True)


@app.command("new-key")
def new_key() -> None:
    """Print a fresh key, to put in front of POLLER_SECRET_KEYS (or of {home}/secret.key)."""
    typer.echo(crypto.new_key())


@app.command("rotate-key")
def rotate_key() -> None:
    """Re-encrypt every stored secret with the newest key; afterwards the older keys can go."""
    from cli.context import settings as _settings
    from config.wiring import current_engine

    engine = current_engine(_settings())
    # One transaction: a value no key decrypts aborts the run with nothing changed.
    with engine.begin() as conn:
        count = crypto.rewrite_secrets(conn, "rotate")
    keyring = crypto.installed()
    typer.echo(f"re-encrypted {count} stored secrets with the newest key of {keyring.source}")
    if keyring.count > 1:
        # A process still running with the old key first would write with it again.
        typer.echo(f"the other {keyring.count - 1} key(s) can be removed once every poller process "
                   "runs with the new key first")


def register(main: typer.Typer) -> None:
    """Add `poller secrets` to the main app."""
    main.add_typer(app, name="secrets")
