"""worker.fanout: results in order, the caller's context on every thread, the first error raised."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from worker.fanout import fan_out

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_one_thread_runs_inline() -> None:
    here = threading.get_ident()
    assert fan_out(lambda x: (x, threading.get_ident() == here), [1, 2, 3], threads=1) == [
        (1, True), (2, True), (3, True)]


def test_threads_keep_order_and_the_callers_context() -> None:
    WHO.set("task-7")
    got = fan_out(lambda x: (x * 2, WHO.get()), list(range(20)), threads=4, name="t")
    assert got == [(x * 2, "task-7") for x in range(20)]


def test_a_pool_of_the_callers_is_used_and_left_running() -> None:
    pool = ThreadPoolExecutor(2, thread_name_prefix="mine")
    names = fan_out(lambda _: threading.current_thread().name, [1, 2, 3], threads=2, pool=lambda: pool)
    assert all(n.startswith("mine") for n in names)
    assert pool.submit(lambda: 1).result() == 1  # not shut down
    pool.shutdown()


def test_the_first_error_in_order_is_raised() -> None:
    def run(x: int) -> int:
        if x in (3, 5):
            raise ValueError(str(x))
        return x

    with pytest.raises(ValueError, match="3"):
        fan_out(run, list(range(8)), threads=3)
