"""`poller providers webhooks sync PROVIDER`: the webhooks a provider pushes to our ingress."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="The provider accounts: what they push to the poller.", no_args_is_help=True)
hooks = typer.Typer(help="Webhooks registered with a provider, pushing to POLLER_PUBLIC_URL/ingress/...",
                    no_args_is_help=True)
app.add_typer(hooks, name="webhooks")


@hooks.command()
def sync(
    provider: Annotated[str, typer.Argument(help="A provider with a webhooks API: billit.")],
    account: Annotated[str, typer.Option(help="The provider account (see POLLER_<P>__ACCOUNTS__...).")] = "default",
    remove: Annotated[bool, typer.Option("--remove", help="Delete the webhooks this poller registered "
                                                          "(and forget the ones it adopted).")] = False,
) -> None:
    """Register (or find) the webhooks that push the account's changes to our ingress; their
    secrets are stored encrypted. Exits 1 naming any webhook at our address whose secret is unknown."""
    from cli.context import settings as _settings
    from config.wiring import current_engine, provider_webhooks_for

    settings = _settings()
    current_engine(settings)  # only `poller migrate`, `run` and `worker` change the schema
    webhooks = provider_webhooks_for(settings)
    report = webhooks.remove(provider, account) if remove else webhooks.sync(provider, account)
    for line in report.lines or ["nothing to do"]:
        typer.echo(line)
    for problem in report.problems:
        typer.echo(f"error: {problem}", err=True)
    if report.problems:
        raise typer.Exit(1)


def register(main: typer.Typer) -> None:
    """Add `poller providers` to the main CLI."""
    main.add_typer(app, name="providers")
