"""Maintenance tasks: the daily prune (beat sends it at POLLER_PRUNE_AT)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import structlog
from celery import shared_task

from config.celery_app import PRUNE_TASK
from worker.errors import PollerError

log = structlog.get_logger(__name__)

#: A prune works in short batches and may take a while on a large store; the tasks' default time
#: limit (a poll lease and a half) is far too short for it.
PRUNE_TIME_LIMIT_S = 6 * 3600


@shared_task(name=PRUNE_TASK, ignore_result=True, time_limit=PRUNE_TIME_LIMIT_S,
             soft_time_limit=PRUNE_TIME_LIMIT_S - 60)
def prune() -> dict[str, int]:
    """Remove history older than the POLLER_RETENTION_* settings, in a process of its own (see
    :func:`prune_in_child`)."""
    return prune_in_child(timeout_s=PRUNE_TIME_LIMIT_S - 120)


def prune_in_child(*, timeout_s: float) -> dict[str, int]:
    """Run `poller prune` as a child process and return the rows it removed per table.

    In the worker's process (a threads pool by default) the prune's Python work would hold the GIL
    that every poll's and delivery's database call waits for again after releasing it: beside a
    busy thread, a 300-row SQLite read took 1,100 ms instead of 0.5 (the convoy effect; bench/gil_convoy.py). The child
    inherits the environment, so the same settings, log stream and metrics directory (its counts
    reach /metrics), and records the prune's heartbeat itself. It has a session of its own, so a
    Ctrl-C meant for `poller run` does not cut it short; if this task ends any other way than by
    its end (a time limit, a shutdown), it is stopped too. A worker killed outright leaves it to
    finish its batches, each a transaction of its own.

    Raises:
        PollerError: the child failed (its error is in the log) or was stopped by a signal.
    """
    started = time.monotonic()
    # -P: the worker's working directory is not put first on the path (a `cli/` there is not ours).
    with subprocess.Popen([sys.executable, "-P", "-m", "cli.main", "prune", "--json"], stdout=subprocess.PIPE,
                          text=True, start_new_session=True) as child:
        try:
            out, _ = child.communicate(timeout=timeout_s)
        except BaseException:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
    if child.returncode < 0:
        raise PollerError(f"`poller prune` was stopped by signal {-child.returncode}")
    if child.returncode != 0:
        # Its own error went to the log (stderr, shared with this worker) just before this.
        raise PollerError(f"`poller prune` exited with status {child.returncode}; its error is logged above")
    removed: dict[str, int] = json.loads(out.strip().splitlines()[-1])["removed"]
    # A command logs at WARNING unless told otherwise: the worker says what its child did.
    log.info("prune.done", pid=child.pid, seconds=round(time.monotonic() - started, 3), **removed)
    return removed
