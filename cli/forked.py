"""Children of `poller run` forked from it, not started afresh: they share its imported code.

Every role (worker, beat, API) imports the same 60-90 MB of modules. Started with exec, each
holds its own copy; forked from a parent that imported them once (and froze them out of the
garbage collector, which would otherwise touch, and so copy, every object), they share those
pages until written. That is the difference between about 400 MB and about 200 MB for the whole
daemon (BENCHMARKS.md, "Poll path"). gunicorn's ``--preload`` does the same for the same reason.

The parent must hold no thread, database connection or Redis client when it forks: it only
imports, binds sockets and supervises.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable

#: What the children import, but not prometheus_client: it picks its storage (one process or
#: many) at import, from an environment variable each child sets for itself (config/metrics.py).
_SHARED = (
    "config.celery_app", "config.wiring", "config.beat", "tasks.polling", "tasks.delivery", "api.app", "cli.serve",
    "celery.apps.worker", "celery.apps.beat", "celery.beat", "celery.worker.consumer", "celery.worker.strategy",
    "celery.concurrency.thread", "celery.events", "kombu.transport.redis", "kombu.asynchronous",
    "uvicorn", "uvicorn.protocols.http.h11_impl", "uvicorn.loops.asyncio", "uvicorn.lifespan.off",
    "worker.store.migrate", "worker.leader",
)


def preload() -> None:
    """Import what the children run, so they share it; then freeze it out of the collector.

    The environment must already be the children's: the Celery app reads its settings at import.
    """
    import importlib

    for module in _SHARED:
        importlib.import_module(module)
    freeze_heap()


def freeze_heap() -> None:
    """Move everything alive now out of the collector's reach for good: what a process made to
    start is never garbage, and a full collection that walks it too costs tens of milliseconds in
    the middle of a request (a 1,000-event page, measured: 55-65 ms pauses, 4-8 ms after this)."""
    gc.collect()
    gc.freeze()


class Forked:
    """A forked child running ``main`` (its return value is the exit status), with the parts of
    ``subprocess.Popen``'s interface the supervisor uses."""

    def __init__(self, main: Callable[[], int | None], *, name: str, close_fds: tuple[int, ...] = ()) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its exit status is what the tests see
            for fd in close_fds:  # the parent's: the home lock must die with the parent alone
                with contextlib.suppress(OSError):
                    os.close(fd)
            # Its command line is the parent's: the name tells ps, top and the benchmarks what it is.
            with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
                comm.write(name[:15])
            os._exit(_run_child(main))
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                os.close(self._pidfd)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit; ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
        if self.returncode is None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        code = self.poll()
        assert code is not None  # the pidfd is readable only once the child has exited
        return code

    def send_signal(self, sig: int) -> None:
        """Signal the child, unless it has already been reaped."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


def _run_child(main: Callable[[], int | None]) -> int:  # pragma: no cover - runs in the child
    # The parent's handlers (SIGTERM as Ctrl-C) are its own; each role installs what it needs.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        code = main() or 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:
        code = 0
    except BaseException:  # noqa: BLE001 - reported, then the exit status says it
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    return code
