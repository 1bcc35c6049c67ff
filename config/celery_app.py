"""The Celery app: configuration from Settings, the one beat entry, logging through structlog.

`celery -A config.celery_app worker|beat` and `poller worker|beat|run` all load this module.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from config.broker import transport_for
from config.logging import configure_logging
from config.settings import Settings, get_settings
from config.validation import time_of_day

#: Task names, fixed so renaming a Python function never orphans queued messages.
DISPATCH_TASK = "polling.dispatch_due"
POLL_TASK = "polling.poll_items"
DELIVER_DUE_TASK = "delivery.deliver_due"
DELIVER_TASK = "delivery.deliver"
PRUNE_TASK = "maintenance.prune"
SWEEP_TASK = "sweeps.sweep_due"
#: The ticks' own queue: a worker takes from it as soon as a task slot frees, never after the
#: backlog of poll chunks the ticks themselves put on the default queue.
TICKS_QUEUE = "poller.ticks"


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``. The broker must be set (``poller run`` sets it)."""
    prune_hour, prune_minute = time_of_day(settings.prune_at)
    broker_url = settings.broker_url or "redis://127.0.0.1:6379/0"
    app = Celery("status_poller", broker=broker_url,
                 include=["tasks.polling", "tasks.delivery", "tasks.maintenance", "tasks.sweeps"])
    app.conf.update(
        broker_transport=transport_for(broker_url),
        # Each queue its own routing key: two queues bound with one key would both get each message.
        task_queues=(Queue(TICKS_QUEUE, Exchange(TICKS_QUEUE), routing_key=TICKS_QUEUE),  # type: ignore[no-untyped-call]
                     Queue("celery", Exchange("celery"), routing_key="celery")),  # type: ignore[no-untyped-call]
        task_default_queue="celery",
        task_routes={DISPATCH_TASK: {"queue": TICKS_QUEUE}, DELIVER_DUE_TASK: {"queue": TICKS_QUEUE}},
        worker_pool=settings.worker_pool,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        enable_utc=True,
        # Polls are protected by the database lease, not by broker redelivery: a poll lost with a
        # dead worker is re-dispatched when its lease ends, so early ack cannot lose an item and
        # avoids Redis's visibility-timeout redelivery of long tasks (celery#2599, #7009).
        task_acks_late=False,
        # One message at a time per process: chunks already batch the work, and a deep prefetch
        # would strand claimed items in a busy process's buffer past their lease.
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        worker_concurrency=settings.worker_concurrency,
        broker_connection_retry_on_startup=True,
        task_time_limit=settings.lease_seconds * 1.5,
        task_soft_time_limit=settings.lease_seconds * 1.2,
        beat_schedule_filename=str(settings.home / "celerybeat-schedule"),
        beat_max_loop_interval=max(1.0, settings.tick_seconds),
        # Exactly one effective scheduler: see config/beat.py.
        beat_scheduler="config.beat:LeaderScheduler",
        beat_schedule={
            "dispatch-due": {
                "task": DISPATCH_TASK,
                "schedule": settings.tick_seconds,
                # A tick nobody ran in time is worthless: the next one claims the same items.
                "options": {"expires": settings.tick_seconds},
            },
            # Retention, once a day at POLLER_PRUNE_AT (UTC).
            "prune": {"task": PRUNE_TASK, "schedule": crontab(hour=prune_hour, minute=prune_minute)},
            # The safety net: retries come due here; new events are also pushed at once by the poll.
            "deliver-due": {
                "task": DELIVER_DUE_TASK,
                "schedule": settings.tick_seconds,
                "options": {"expires": settings.tick_seconds},
            },
        },
    )
    if settings.sweep_intervals():
        # Each account's own interval is kept in the database (worker.sweeps): the tick only asks
        # which are due, on the default queue, since a sweep of many pages takes a while.
        app.conf.beat_schedule["sweep-due"] = {
            "task": SWEEP_TASK, "schedule": settings.tick_seconds, "options": {"expires": settings.tick_seconds}}
    return app


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from installing its own handlers.
    s = get_settings()
    configure_logging(s.log_format, s.log_level)


app = create_app(get_settings())


@worker_process_shutdown.connect
def _pool_process_exited(pid: int | None = None, **_: Any) -> None:
    from config.metrics import child_exited

    child_exited(pid or os.getpid())


@task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    # Every line a task logs carries its id and name (its code binds item, provider and event).
    import structlog

    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    import structlog

    structlog.contextvars.clear_contextvars()


@task_failure.connect
def _task_failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    # A task that raises is a failure the database may not be able to hold (it may be the cause):
    # it goes to the broker's Redis, where `poller health` reads it.
    from config.wiring import record_worker_fault
    from worker.errors import describe_exception

    record_worker_fault(get_settings(), getattr(sender, "name", "task"),
                        describe_exception(exception) if exception else "failed")


@worker_process_init.connect
def _check_database(**_: Any) -> None:
    # A pool process that cannot write the database would fail every task it takes: say so once,
    # where health looks, instead of crash-looping or failing silently.
    from config.wiring import check_worker_database

    check_worker_database(get_settings())


@worker_init.connect
def _check_database_threads(**_: Any) -> None:
    # The threads pool runs tasks in the worker's own process, which no process-init signal names.
    if get_settings().worker_pool != "prefork":
        _check_database()
