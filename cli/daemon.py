"""`poller run`: a worker and beat for one machine, with an embedded Redis when none is set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import typer

from cli.embedded import EmbeddedRedis
from config.settings import Settings
from config.wiring import engine_for
from worker.store.migrate import upgrade


def run_daemon(settings: Settings) -> int:
    """Start everything, wait, and stop in order on Ctrl-C or SIGTERM. Returns the exit code.

    Children: the embedded Redis (own session, stopped last), a Celery worker and Celery beat
    (our process group, so a terminal Ctrl-C reaches them at once and they shut down warm).
    """
    from cli.main import interrupt_on_sigterm

    interrupt_on_sigterm()
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ)
    env["POLLER_DATABASE_URL"] = settings.resolved_database_url()
    env["POLLER_HOME"] = str(settings.home.resolve())
    upgrade(engine_for(settings))
    broker = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        if settings.broker_url:
            env["POLLER_BROKER_URL"] = settings.broker_url
        else:
            broker = EmbeddedRedis(settings.home).start()
            env["POLLER_BROKER_URL"] = broker.url
            # `poller health` in another shell finds the embedded broker here.
            (settings.home / "broker-url").write_text(broker.url + "\n")
        typer.echo(f"poller: database {_redact(env['POLLER_DATABASE_URL'])}", err=True)
        typer.echo(f"poller: broker {_redact(env['POLLER_BROKER_URL'])}"
                   + (" (embedded)" if broker else ""), err=True)
        for role in ("worker", "beat"):
            children.append(subprocess.Popen([sys.executable, "-m", "cli.main", role], env=env))
        typer.echo(f"poller: running (worker pid {children[0].pid}, beat pid {children[1].pid}); "
                   "Ctrl-C stops", err=True)
        pid, status = os.wait()  # returns when any child ends
        if broker and broker.proc and pid == broker.proc.pid:
            broker.proc.returncode = os.waitstatus_to_exitcode(status)
        typer.echo(f"poller: a child process (pid {pid}) exited; stopping", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("poller: stopping", err=True)
        return 0
    finally:
        _stop(children)
        if broker:
            broker.stop()
            (settings.home / "broker-url").unlink(missing_ok=True)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _redact(url: str) -> str:
    """A URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (e.g. redis://)
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            return f"{scheme}://***@{rest.split('@', 1)[1]}"
        return url
