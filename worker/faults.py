"""Failures the worker processes see, kept where `poller health` can read them.

A worker whose database is read-only, deleted or unreachable fails every task, but the database
is exactly where it cannot say so. The broker's Redis is the other shared place every process
reaches, so task failures and failed start-up checks are pushed to a short list there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from worker.errors import describe_exception
from worker.store.db import sqlite_file

#: The list of recent worker faults (newest first), and how many are kept.
FAULTS_KEY = "poller:worker_faults"
KEEP = 50


@dataclass(frozen=True)
class Fault:
    """One failure seen by a worker process."""

    at: float  # Unix time
    pid: int
    where: str  # a task name, or "startup"
    error: str


def record_fault(client: Any, fault: Fault) -> None:
    """Push a fault; never raises (a broker that is down is reported by its own check)."""
    try:
        pipe = client.pipeline()
        pipe.lpush(FAULTS_KEY, json.dumps(fault.__dict__))
        pipe.ltrim(FAULTS_KEY, 0, KEEP - 1)
        pipe.execute()
    except Exception:  # noqa: BLE001 - best effort by design
        pass


def recent_faults(client: Any, *, since: float) -> list[Fault]:
    """Faults recorded at or after ``since`` (Unix time), newest first."""
    faults = []
    for raw in client.lrange(FAULTS_KEY, 0, KEEP - 1):
        try:
            fault = Fault(**json.loads(raw))
        except (ValueError, TypeError):
            continue
        if fault.at >= since:
            faults.append(fault)
    return faults


def missing_file(path: Path) -> str:
    """Why a worker cannot use a SQLite file that is not there."""
    return f"the database file {path} does not exist (deleted?); run `poller migrate` to create it"


def check_database_writable(engine: Engine, *, inode: int | None = None) -> str | None:
    """What stops this process from writing to the database, or None.

    SQLite: the file must exist (and, when ``inode`` is given, still be the file the process
    opened: a deleted database keeps working invisibly on the unlinked inode), and the file, its
    directory and its -wal/-shm files must be writable. Then one write transaction is begun and
    rolled back, which is what every task does first.
    """
    path = sqlite_file(engine.url)
    if path is not None:
        if not path.exists():
            return missing_file(path)
        if inode is not None and path.stat().st_ino != inode:
            return f"the database file {path} was replaced while the worker ran; restart the worker"
        for candidate in (path, path.parent, Path(f"{path}-wal"), Path(f"{path}-shm")):
            if candidate.exists() and not os.access(candidate, os.W_OK):
                return f"{candidate} is not writable by this process (uid {os.getuid()})"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as err:  # noqa: BLE001 - turned into the reason
        return f"the database cannot be written: {describe_exception(err, 200)}"
    return None


def sqlite_inode(engine: Engine) -> int | None:
    """The inode of the SQLite file now, to notice later that it was deleted or replaced."""
    path = sqlite_file(engine.url)
    try:
        return path.stat().st_ino if path is not None else None
    except OSError:
        return None
