"""Asking a task to run now rather than at its next tick, through the broker: the dispatch tick
after a provider's push or a sweep made items due, delivery after a sweep stored events.

Apart from config.wiring because it builds a Celery app (config.celery_app), whose signal
handlers import config.wiring: this way neither of those imports the other.
"""

from __future__ import annotations

from collections.abc import Callable

from config.settings import Settings
from config.wiring import redis_broker


def kick_for(settings: Settings, *, deliver: bool = False) -> Callable[[], None] | None:
    """Sends the dispatch tick (or, with ``deliver``, the delivery task) when called; None without
    a Redis broker (the next tick does the work)."""
    if redis_broker(settings) is None:
        return None
    # Imported here: config.celery_app builds its module-level app from the process's settings.
    from config.celery_app import DELIVER_DUE_TASK, DISPATCH_TASK, create_app

    app = create_app(settings)
    task = DELIVER_DUE_TASK if deliver else DISPATCH_TASK

    def kick() -> None:
        app.send_task(task, expires=settings.tick_seconds)
    return kick
