"""`poller`: track items, read events, run the daemon, serve the HTTP API and the provider simulator."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Annotated, NoReturn

import typer

from cli import context, render
from config.settings import Settings, get_settings
from config.wiring import current_engine, migrated_engine, sessions_for
from worker.errors import ConfigurationError, InputError, PollerError
from worker.follow import FollowCursor

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


def main() -> None:
    """Entry point: run the CLI, turning our errors into one clear line and an exit code.

    Bad input and bad settings exit 2 (nothing was done); other failures exit 1.
    """
    from sqlalchemy.exc import OperationalError

    try:
        app()
    except (InputError, ConfigurationError) as err:
        _fail(str(err), 2)
    except PollerError as err:
        _fail(str(err), 1)
    except OperationalError as err:
        # A valid URL whose server is down or unreachable: the driver's first line says why.
        reason = str(err.orig).strip().splitlines()[0] if err.orig else type(err).__name__
        _fail(f"cannot use the database (POLLER_DATABASE_URL): {_without_password(reason)}", 1)


def _without_password(text: str) -> str:
    """``text`` with the database password (if any) masked; drivers may quote the connection string."""
    from sqlalchemy.engine import make_url

    try:
        secret = make_url(get_settings().resolved_database_url()).password
    except Exception:  # noqa: BLE001 - best effort: reporting a failure must not fail
        secret = None
    return text.replace(secret, "***") if secret else text


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


@app.command()
def track(
    provider: Annotated[str | None, typer.Argument(metavar="PROVIDER", help="Provider name, e.g. billit.")] = None,
    ref: Annotated[str | None, typer.Argument(
        metavar="REF", help="What the provider's status endpoint needs, e.g. an OrderID.")] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between polls.")] = None,
    kind: Annotated[str | None, typer.Option(help="Resource kind, when a provider has several.")] = None,
    account: Annotated[str | None, typer.Option(help="Which configured account of the provider.")] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", metavar="KEY=VALUE", help="A label (repeatable); replaces the item's labels.")] = None,
    external_id: Annotated[str | None, typer.Option(help="Your own id of the item, e.g. an invoice number.")]
    = None,
    file: Annotated[str | None, typer.Option(
        "--file", metavar="PATH", help="Import items from CSV or JSON lines (- reads standard input).")] = None,
) -> None:
    """Track an item and print its id (already tracked: the same id, exit 0); --file imports many.

    Tracking again takes the --interval, --label and --external-id given and keeps the others."""
    from worker.catalog import ItemSpec, check_interval

    if file is not None:
        given = [name for name, value in (("PROVIDER", provider), ("REF", ref), ("--interval", interval),
                 ("--kind", kind), ("--account", account), ("--label", label), ("--external-id", external_id))
                 if value is not None]
        if given:
            raise InputError(f"--file takes every field from the file; drop {', '.join(given)}", field="--file")
        _import(file)
        return
    if provider is None or ref is None:
        raise InputError("give PROVIDER and REF (e.g. `poller track billit 1001`), or --file PATH")
    from cli.imports import parse_label

    labels = dict(parse_label(text) for text in label) if label else None
    spec = ItemSpec(provider=provider, ref=ref, kind=kind, account=account, labels=labels, external_id=external_id,
                    interval_s=None if interval is None else check_interval(interval, field="--interval"))
    item, created = context.catalog().upsert(spec)
    if not created:
        typer.echo(f"poller: {item.provider} {item.kind} {item.ref!r} (account {item.account!r}) "
                   f"was already tracked as item {item.id}", err=True)
    typer.echo(item.id)


def _import(path: str) -> None:
    """`track --file`: parse, store in chunks with a progress bar, report; exit 2 when a line was refused."""
    from cli.imports import import_entries, parse, read_file

    name, text = read_file(path, sys.stdin.read)
    entries = parse(name, text)
    catalog = context.catalog()
    with typer.progressbar(length=len(entries), label="importing", file=sys.stderr) as bar:
        report = import_entries(catalog, entries, progress=bar.update)
    for line in report.lines():
        typer.echo(line)
    raise SystemExit(2 if report.refused else 0)


@app.command()
def untrack(item_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop watching an item. Its events are kept."""
    item = context.catalog().untrack(item_id)
    typer.echo(f"untracked item {item.id} ({item.provider} {item.kind} {item.ref})")


@app.command()
def pause(item_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop polling an item until it is resumed."""
    context.catalog().change(item_id, paused=True)
    typer.echo(f"paused item {item_id}")


@app.command()
def resume(item_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Resume a paused (or gone) item; it is polled at the next tick."""
    context.catalog().change(item_id, paused=False)
    typer.echo(f"resumed item {item_id}")


@app.command()
def items(as_json: Annotated[bool, typer.Option("--json", help="A JSON array.")] = False) -> None:
    """List tracked items with their state and schedule."""
    rows = context.service().items()
    if as_json:
        typer.echo(json.dumps([render.item_dict(i) for i in rows], indent=2))
    else:
        typer.echo(render.items_table(rows))


@app.command()
def events(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    after: Annotated[str | None, typer.Option(help="Only events after this event id.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
    poll_seconds: Annotated[float, typer.Option(help="How often --follow looks for new events.")] = 0.5,
) -> None:
    """Print change events in order."""
    service = context.service()
    cursor = FollowCursor(floor=service.cursor_position(after))
    # Out-of-order commits on PostgreSQL can briefly leave a hole; wait this long for it to fill.
    grace = 10.0
    while True:
        batch = service.events_after(max(0, cursor.floor), limit=1000)
        by_pos = {e.position: e for e in batch}
        for pos in cursor.accept(by_pos):
            e = by_pos[pos]
            typer.echo(render.event_json(e) if as_json else render.event_line(e))
        cursor.settle(time.monotonic(), grace if follow else 0.0)
        if len(batch) == 1000:
            continue
        if not follow:
            return
        sys.stdout.flush()
        time.sleep(poll_seconds)  # the follow loop's own pace, not a synchronization


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False) -> None:
    """Items by provider and state, overdue, failing, deliveries pending, last dispatch tick."""
    from worker.capacity import limits_of
    from worker.status import read_status

    settings = context.settings()
    providers = context.service().providers  # first: it refuses a missing database before anything opens one
    # Read-only: on SQLite a read takes no write lock, so a status on a large store never holds up polling.
    st = read_status(sessions_for(settings, read_only=True), tick_s=settings.tick_seconds,
                     limit_of=limits_of(providers))
    if as_json:
        typer.echo(json.dumps(st.to_dict(), indent=2))
        return
    typer.echo(render.status_table(st))


@app.command()
def health(
    max_lag: Annotated[float, typer.Option(help="Fail when an item is overdue by more than this (seconds).")] = 300.0,
    liveness: Annotated[bool, typer.Option(
        "--liveness", help="Fail only on what a restart can fix (database, broker, workers, beat); "
                           "items and provider accounts are shown as warnings.")] = False,
) -> None:
    """Exit 0 when healthy, 1 when not, naming each check: database, broker, workers (faults they
    recorded), beat tick, dispatch lag, items (failing or stuck), providers (refused credentials)."""
    from worker.status import check_health

    settings = context.settings()
    current_engine(settings)
    broker = settings.broker_url or _embedded_broker_url(settings)
    from config.wiring import broker_ping, worker_faults

    ping = broker_ping(broker)

    # What the workers saw (a read-only or deleted database) is in the broker, not the database.
    faults = (lambda within_s: worker_faults(settings, broker, within_s=within_s)) if broker else None
    checks = check_health(sessions_for(settings, read_only=True), tick_s=settings.tick_seconds, max_lag_s=max_lag,
                          broker_ping=ping, faults=faults)
    counted = [c for c in checks if not liveness or c.name in LIVENESS_CHECKS]
    for c in checks:
        typer.echo(f"{'ok  ' if c.ok else 'FAIL' if c in counted else 'warn'}  {c.name:<9} {c.detail}")
    raise SystemExit(0 if all(c.ok for c in counted) else 1)


#: What `poller health --liveness` fails on: what restarting the poller can fix.
LIVENESS_CHECKS = frozenset({"database", "broker", "workers", "beat"})


def _embedded_broker_url(settings: Settings) -> str | None:
    path = settings.home / "broker-url"
    return path.read_text().strip() if path.exists() else None


@app.command()
def migrate() -> None:
    """Apply database migrations (`poller run` and `poller worker` do too; no other command does)."""
    migrated_engine(context.settings(), create=True)
    typer.echo("database is up to date")


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(
        help="Tasks at once (threads, or processes with POLLER_WORKER_POOL=prefork).")] = None,
) -> None:
    """Run a Celery worker (for deployments with a shared broker); serves /metrics."""
    settings = _require_broker()
    migrated_engine(settings)
    from config import metrics

    metrics.prepare(settings, "worker")
    metrics.serve(settings, "worker")
    from config.celery_app import app as celery_app

    # The worker itself, not Celery's command line: that imports an interactive shell's worth of
    # modules (click-repl, prompt_toolkit) a daemon never uses.
    worker_ = celery_app.Worker(loglevel=settings.log_level, without_mingle=True, without_gossip=True,
                                concurrency=concurrency or settings.worker_concurrency)
    worker_.start()
    raise SystemExit(worker_.exitcode)


@app.command()
def beat() -> None:
    """Run Celery beat, which sends the dispatch tick; run two or more for failover (a leader lease lets one send)."""
    settings = _require_broker()
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    from config import metrics

    metrics.prepare(settings, "beat")
    metrics.serve(settings, "beat")
    from config.celery_app import app as celery_app

    celery_app.Beat(loglevel=settings.log_level).run()


def _require_broker() -> Settings:
    settings = context.settings()
    if not settings.broker_url:
        raise ConfigurationError("POLLER_BROKER_URL is not set (`poller run` starts an embedded Redis)")
    return settings


@app.command()
def run() -> None:
    """Run worker, beat and the HTTP API on this machine; embedded Redis and SQLite unless configured."""
    from cli.daemon import run_daemon

    raise SystemExit(run_daemon(context.settings(), main))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: POLLER_API_ADDR].")] = None,
    port: Annotated[int | None, typer.Option(help="Port (0 picks a free one) [default: POLLER_API_PORT].",
                                             min=0, max=65535)] = None,
    fd: Annotated[int | None, typer.Option(hidden=True, help="A listening socket (from `poller run`).")] = None,
) -> None:
    """Serve the HTTP API (/v1, /docs, /healthz, the status page at /) until Ctrl-C or SIGTERM.

    Never migrates: the database must be at this poller's schema (`poller migrate`)."""
    from cli.serve import run_api

    run_api(context.settings(), host=host, port=port, fd=fd)


@app.command()
def simulate(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).", min=0, max=65535)] = 8900,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 1.0,
    stage_seconds: Annotated[float, typer.Option(help="Simulated seconds between life stages.")] = 10.0,
    orders: Annotated[int, typer.Option(help="Billit orders to create at start.")] = 3,
    billit_oauth: Annotated[bool, typer.Option(help="Billit takes OAuth2 bearer tokens (rotating refresh token).")]
    = False,
    token_ttl: Annotated[float, typer.Option(help="Lifetime of issued access tokens, real seconds.")] = 3600.0,
) -> None:
    """Serve the five provider APIs on loopback, with their auth flows and faults on demand."""
    from cli.serve import port_error
    from simulator.server import Simulator, SimulatorConfig

    try:
        sim = Simulator(SimulatorConfig(port=port, speed=speed, stage_seconds=stage_seconds, seed_orders=orders,
                                        token_ttl_seconds=token_ttl, options={"billit_oauth": billit_oauth}))
        sim.start()
    except ValueError as err:
        raise InputError(str(err)) from None
    except OSError as err:
        raise port_error(err, port) from None
    typer.echo(sim.describe())
    context.interrupt_on_sigterm()
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()




from cli import webhooks as _webhooks  # noqa: E402 - registers its commands on `app`

_webhooks.register(app)

from cli import secrets as _secrets  # noqa: E402 - registers `poller secrets` on `app`

_secrets.register(app)

from cli import keys as _keys  # noqa: E402 - registers `poller keys` on `app`

_keys.register(app)

from cli import maintenance as _maintenance  # noqa: E402 - registers `poller prune` on `app`

_maintenance.register(app)

from cli import providers as _providers  # noqa: E402 - registers `poller providers` on `app`

_providers.register(app)

if __name__ == "__main__":
    main()
