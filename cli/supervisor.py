"""`poller run`'s supervisor: restart a child that dies, give up on one that keeps dying.

The decision ("restart after how long, or give up?") is the pure function ``after_exit``; the
``Supervisor`` only watches processes, sleeps and starts them again. Celery's worker and beat
reconnect to a restarted broker by themselves; a child that exits anyway is simply restarted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import typer

from worker.errors import PollerError

#: The first restart waits this long; each further death within the window doubles it.
BACKOFF_START_S = 0.5
#: No restart waits longer than this.
BACKOFF_MAX_S = 10.0
#: A child that dies this many times within GIVE_UP_WINDOW_S stops the daemon.
GIVE_UP_DEATHS = 5
GIVE_UP_WINDOW_S = 60.0
#: How often the supervisor looks at its children: the delay before a death is noticed.
WATCH_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Verdict:
    """What to do about a child that just died: restart after ``delay_s``, or give up."""

    give_up: bool
    delay_s: float
    recent: int  # deaths within the window, this one included


def after_exit(deaths: Sequence[float], now: float) -> Verdict:
    """Decide about a child whose deaths happened at ``deaths`` (monotonic seconds, the last one now).

    Deaths older than the window are forgotten, so a child that ran well for a minute starts
    again from the shortest backoff.
    """
    recent = sum(1 for t in deaths if now - t < GIVE_UP_WINDOW_S)
    if recent >= GIVE_UP_DEATHS:
        return Verdict(True, 0.0, recent)
    return Verdict(False, min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** max(0, recent - 1)), recent)


def describe_exit(returncode: int | None) -> str:
    """A process's end in words: ``exit status 1`` or ``killed by SIGKILL``."""
    if returncode is None:
        return "did not start"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Proc(Protocol):
    """A running child: ``subprocess.Popen`` or ``cli.forked.Forked``."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...  # noqa: D102
    def wait(self, timeout: float | None = None) -> int: ...  # noqa: D102
    def send_signal(self, sig: int) -> None: ...  # noqa: D102
    def kill(self) -> None: ...  # noqa: D102


@dataclass
class Child:
    """One supervised process: how to start it, the running process, and its history."""

    name: str
    start: Callable[[], Proc]
    proc: Proc | None = None
    deaths: list[float] = field(default_factory=list)
    restarts: int = 0
    due: float | None = None  # when a dead child is to be started again


class ChildKeepsDying(PollerError):
    """A child died too often to go on; ``str()`` is the one-line reason (exit status 1)."""


class Supervisor:
    """Watch children in a loop, restarting the dead ones with backoff.

    ``on_restart(name, restarts)`` runs after each restart (it publishes the counters) and
    ``on_exit(child, pid)`` when a child has died (it forgets per-process files).
    """

    def __init__(self, children: list[Child], *, on_restart: Callable[[str, int], None] = lambda n, r: None,
                 on_exit: Callable[[Child, int], None] = lambda c, p: None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.children = children
        self.on_restart, self.on_exit = on_restart, on_exit
        self.clock, self.sleep = clock, sleep

    def run(self) -> None:
        """Supervise until a child keeps dying (raises ``ChildKeepsDying``) or a signal interrupts."""
        while True:
            self.step()
            self.sleep(WATCH_INTERVAL_S)  # the watch loop's own pace, not a synchronization

    def step(self) -> None:
        """Look at every child once: note the dead, start the ones whose backoff is over."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._died(child, child.proc.returncode, child.proc.pid)
            if child.proc is None and child.due is not None and self.clock() >= child.due:
                self._restart(child)

    def _died(self, child: Child, returncode: int | None, pid: int | None) -> None:
        now = self.clock()
        child.proc = None
        child.deaths = [t for t in child.deaths if now - t < GIVE_UP_WINDOW_S] + [now]
        if pid is not None:
            self.on_exit(child, pid)
        verdict = after_exit(child.deaths, now)
        what = f"{child.name}{f' (pid {pid})' if pid else ''} {describe_exit(returncode)}"
        if verdict.give_up:
            raise ChildKeepsDying(f"{child.name} keeps dying ({verdict.recent} times within "
                         f"{GIVE_UP_WINDOW_S:.0f} s, last: {describe_exit(returncode)})")
        typer.echo(f"poller: {what}; restart {child.restarts + 1} in {verdict.delay_s:.1f} s", err=True)
        child.due = now + verdict.delay_s

    def _restart(self, child: Child) -> None:
        child.due = None
        child.restarts += 1
        self.on_restart(child.name, child.restarts)
        try:
            child.proc = child.start()
        except Exception as err:  # noqa: BLE001 - a failed start is one more death, not our crash
            typer.echo(f"poller: {child.name} did not start: {err}", err=True)
            self._died(child, None, None)
            return
        typer.echo(f"poller: {child.name} restarted (pid {child.proc.pid})", err=True)
