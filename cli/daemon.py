"""`poller run`: worker, beat and the HTTP API on one machine (embedded Redis when none is set),
restarted when they die."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import typer

from cli import context
from cli.embedded import EmbeddedRedis
from cli.forked import Forked, preload
from cli.serve import announce, listen, url_of
from cli.supervisor import Child, Proc, Supervisor
from config import metrics
from config.settings import Settings
from config.wiring import engine_for
from worker.errors import ConfigurationError
from worker.store.migrate import upgrade

#: Held (flock) by the running daemon, under POLLER_HOME; it holds that daemon's pid.
LOCK_FILE = "poller.lock"


def run_daemon(settings: Settings, entry: Callable[[], None]) -> int:
    """Start everything, restart what dies, and stop in order on Ctrl-C or SIGTERM (exit code 0).

    ``entry`` is the command line's entry point (cli.main.main), which each forked child runs
    with its role's arguments: passed in, so this module does not import the one importing it.

    Children: the embedded Redis (own session, stopped last), a Celery worker, Celery beat and
    `poller api` on a socket bound here (our process group, so a terminal Ctrl-C reaches them at
    once and they shut down warm). A port in use is an InputError before anything starts (exit 2).
    A child that dies is restarted with backoff (cli/supervisor.py); one that keeps dying
    raises ``ChildKeepsDying`` after everything is stopped (exit 1). A second daemon on the same
    home raises ``ConfigurationError`` before it starts anything (exit 2).
    """
    from cli.context import interrupt_on_sigterm

    interrupt_on_sigterm()
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = _lock_home(settings.home)
    env = dict(os.environ)
    env["POLLER_DATABASE_URL"] = settings.resolved_database_url()
    env["POLLER_HOME"] = str(settings.home.resolve())
    broker = None
    api_sock: socket.socket | None = None
    children: list[Child] = []
    try:
        # Bound here and inherited by each `poller api` child: a restarted API finds its port, and
        # connections made meanwhile wait in the backlog.
        api_sock = listen(settings.api_addr, settings.api_port, option="POLLER_API_PORT")
        upgrade(engine_for(settings))
        if settings.broker_url:
            env["POLLER_BROKER_URL"] = settings.broker_url
        else:
            broker = EmbeddedRedis(settings.home).start()
            env["POLLER_BROKER_URL"] = broker.url
            # `poller health` in another shell finds the embedded broker here.
            (settings.home / "broker-url").write_text(broker.url + "\n")
            # Same port and directory again: the worker's and beat's connections find it there.
            children.append(Child("redis", partial(_restart_redis, broker), broker.proc))
        # The children are forked from this process (cli/forked.py): it takes their environment,
        # imports what they run, and keeps no database connection across the fork.
        os.environ.update(env)
        context.reset()
        engine_for(settings).dispose()
        preload()
        typer.echo(f"poller: database {_redact(env['POLLER_DATABASE_URL'])}", err=True)
        typer.echo(f"poller: broker {_redact(env['POLLER_BROKER_URL'])}"
                   + (" (embedded)" if broker else ""), err=True)
        for role in ("worker", "beat", "api"):
            spawn = partial(_spawn, entry, role, lock, api_sock if role == "api" else None, api_sock)
            children.append(Child(role, spawn, spawn()))
        typer.echo(announce(url_of(api_sock)), err=True)
        restarts = {c.name: 0 for c in children}
        metrics.record_restarts(settings.home, restarts)
        typer.echo("poller: running (" + ", ".join(f"{c.name} pid {c.proc.pid}" for c in children if c.proc)
                   + "); Ctrl-C stops", err=True)

        def restarted(name: str, count: int) -> None:
            restarts[name] = count
            metrics.record_restarts(settings.home, restarts)

        def exited(child: Child, pid: int) -> None:
            if child.name != "redis":
                metrics.forget(settings.home, child.name, pid)

        Supervisor(children, on_restart=restarted, on_exit=exited).run()
        return 1  # pragma: no cover - run() only ends by raising
    except KeyboardInterrupt:
        typer.echo("poller: stopping", err=True)
        return 0
    finally:
        _stop([c.proc for c in children if c.name != "redis" and c.proc])
        if broker:
            broker.stop()
            (settings.home / "broker-url").unlink(missing_ok=True)
        (settings.home / metrics.RESTARTS_FILE).unlink(missing_ok=True)
        if api_sock is not None:
            api_sock.close()
        os.close(lock)


def _spawn(entry: Callable[[], None], role: str, lock: int, sock: socket.socket | None,
           api_sock: socket.socket) -> Forked:
    argv = ["poller", role] + (["--fd", str(sock.fileno())] if sock is not None else [])

    def main() -> None:
        sys.argv = argv
        entry()

    return Forked(main, name=f"poller-{role}", close_fds=(lock,) if sock is not None else (lock, api_sock.fileno()))


def _restart_redis(broker: EmbeddedRedis) -> subprocess.Popen[bytes]:
    broker.start()
    assert broker.proc is not None  # start() either set it or raised
    return broker.proc


def _lock_home(home: Path) -> int:
    """Hold ``{home}/poller.lock`` for this process's life; refuse when another daemon holds it.

    flock, not the file's existence: the kernel drops the lock when its holder dies, so a crashed
    daemon never leaves a stale lock behind. The pid in the file is only for the message.
    """
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigurationError(
            f"another `poller run` (pid {pid}) is running on POLLER_HOME {home.resolve()}; "
            "stop it first, or give this one another POLLER_HOME") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _stop(children: list[Proc]) -> None:
    """SIGTERM all, then wait for each (a warm shutdown), killing one that takes over 30 s."""
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
