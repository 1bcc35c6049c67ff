"""Running one function over many inputs on threads: polls in a chunk, delivery chains in a batch.

They wait on the network, so threads help; each call runs in a copy of the caller's context, so
log lines keep the task's bound fields.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def fan_out(run: Callable[[T], R], inputs: Sequence[T], *, threads: int,
            pool: Callable[[], Executor] | None = None, name: str = "fan") -> list[R]:
    """``run`` on each input, the results in input order.

    On this thread when ``threads`` is 1 or there is one input; else on ``pool()`` (a pool the
    caller keeps) or on a pool of its own of up to ``threads`` threads, shut down before returning.
    The first exception, in input order, is raised.
    """
    if threads <= 1 or len(inputs) <= 1:
        return [run(x) for x in inputs]
    if pool is not None:
        return _gather(pool(), run, inputs)
    with ThreadPoolExecutor(max_workers=min(threads, len(inputs)), thread_name_prefix=name) as own:
        return _gather(own, run, inputs)


def _gather(pool: Executor, run: Callable[[T], R], inputs: Sequence[T]) -> list[R]:
    futures: list[Future[R]] = [pool.submit(contextvars.copy_context().run, run, x) for x in inputs]
    return [f.result() for f in futures]
