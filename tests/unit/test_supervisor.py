"""`poller run`'s supervisor: the restart decision, the watch loop on fake processes, the home lock."""

from __future__ import annotations

import os
import signal

import pytest

from cli.daemon import _lock_home
from cli.supervisor import (
    BACKOFF_MAX_S,
    GIVE_UP_DEATHS,
    GIVE_UP_WINDOW_S,
    Child,
    ChildKeepsDying,
    Supervisor,
    after_exit,
    describe_exit,
)
from config.metrics import RestartsCollector, record_restarts
from worker.errors import ConfigurationError


def test_backoff_doubles_from_half_a_second_to_the_cap():
    delays = [after_exit([0.0] * n, 0.0).delay_s for n in range(1, GIVE_UP_DEATHS)]
    assert delays == [0.5, 1.0, 2.0, 4.0]
    assert after_exit([100.0 * i for i in range(1, 9)], 800.0).delay_s == 0.5  # old deaths forgotten


def test_cap_holds_when_the_limit_allows_many_deaths(monkeypatch):
    monkeypatch.setattr("cli.supervisor.GIVE_UP_DEATHS", 100)
    assert after_exit([0.0] * 20, 0.0).delay_s == BACKOFF_MAX_S


def test_gives_up_on_the_fifth_death_within_the_window():
    within = [0.0, 10.0, 20.0, 30.0, 59.0]
    assert after_exit(within, 59.0).give_up
    assert not after_exit(within[:4], 30.0).give_up
    # The first death is a minute old: only four count.
    spread = [0.0, 10.0, 20.0, 30.0, GIVE_UP_WINDOW_S]
    verdict = after_exit(spread, GIVE_UP_WINDOW_S)
    assert not verdict.give_up and verdict.recent == 4


def test_describe_exit():
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(None) == "did not start"


class FakeProc:
    """A Popen stand-in: alive until the test ends it."""

    pids = iter(range(1000, 2000))

    def __init__(self) -> None:
        self.pid = next(self.pids)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_restarts_a_dead_child_after_its_backoff_and_counts(capsys):
    clock, started, counted, exited = FakeClock(), [], [], []

    def start() -> FakeProc:
        started.append(FakeProc())
        return started[-1]

    child = Child("worker", start, start())  # type: ignore[arg-type]
    sup = Supervisor([child], on_restart=lambda n, c: counted.append((n, c)),
                     on_exit=lambda c, pid: exited.append(pid), clock=clock)
    first = child.proc
    first.returncode = -signal.SIGKILL  # type: ignore[union-attr]
    sup.step()
    assert child.proc is None and exited == [first.pid]  # type: ignore[union-attr]
    assert "poller: worker (pid 1000) killed by SIGKILL; restart 1 in 0.5 s" in capsys.readouterr().err
    clock.now = 0.4
    sup.step()
    assert child.proc is None  # still backing off
    clock.now = 0.5
    sup.step()
    assert child.proc is started[-1] and len(started) == 2
    assert counted == [("worker", 1)] and child.restarts == 1
    assert f"poller: worker restarted (pid {child.proc.pid})" in capsys.readouterr().err


def test_a_start_that_fails_is_one_more_death(capsys):
    clock, attempts = FakeClock(), []

    def start() -> FakeProc:
        attempts.append(clock.now)
        raise ConfigurationError("embedded redis-server did not start")

    child = Child("redis", start, None, due=0.0)  # type: ignore[arg-type]
    sup = Supervisor([child], clock=clock)
    sup.step()
    assert "redis did not start: embedded redis-server did not start" in capsys.readouterr().err
    assert child.due == 0.5 and len(child.deaths) == 1


def test_a_child_that_keeps_dying_stops_with_one_line(capsys):
    clock = FakeClock()

    def start() -> FakeProc:
        proc = FakeProc()
        proc.returncode = 1  # dies at once
        return proc

    child = Child("beat", start, start())  # type: ignore[arg-type]
    sup = Supervisor([child], clock=clock)
    with pytest.raises(ChildKeepsDying) as err:
        for _ in range(100):  # bounded: it must give up long before
            sup.step()
            clock.now += 0.25
    assert str(err.value) == "beat keeps dying (5 times within 60 s, last: exit status 1)"
    assert child.restarts == 4
    assert clock.now < 10  # backoff 0.5 + 1 + 2 + 4 s


def test_the_home_lock_refuses_a_second_daemon_and_names_the_first(tmp_path):
    fd = _lock_home(tmp_path)
    try:
        with pytest.raises(ConfigurationError, match=rf"another `poller run` \(pid {os.getpid()}\) is running"):
            _lock_home(tmp_path)
    finally:
        os.close(fd)
    os.close(_lock_home(tmp_path))  # released with its holder: no stale lock


def test_restart_counts_reach_the_metrics_collector(tmp_path):
    assert list(RestartsCollector(tmp_path).collect()) == []  # no daemon: no counter
    record_restarts(tmp_path, {"redis": 1, "worker": 0, "beat": 2})
    (family,) = RestartsCollector(tmp_path).collect()
    assert family.name == "poller_restarts"
    assert {(s.name, s.labels["process"], s.value) for s in family.samples} == {
        ("poller_restarts_total", "redis", 1), ("poller_restarts_total", "worker", 0),
        ("poller_restarts_total", "beat", 2)}
