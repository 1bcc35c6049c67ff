"""Engine and session factories, with the per-database settings that make concurrency safe."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from worker.documents import dumps_strict, loads_stored

log = structlog.get_logger(__name__)

M = TypeVar("M")


def make_engine(url: str, *, busy_timeout_s: float = 30.0, **kwargs: Any) -> Engine:
    """Create an engine for ``url``.

    Every JSON column is written as strict JSON (no NaN or Infinity), on every database.
    SQLite gets WAL (readers never block the writer), a busy timeout (how long a write waits for
    the lock before it fails; ``busy_timeout_s``), and ``BEGIN IMMEDIATE``
    for every transaction: with the default deferred BEGIN, two processes that both read then
    write can deadlock in a way the busy timeout does not resolve.
    """
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None:
            create_private(path)
        # A small statement cache: the hot statements stay in it, while one-off texts (IN lists of
        # other lengths) no longer pile up to 128 prepared statements on every pooled connection.
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s, "cached_statements": 32},
                               json_serializer=dumps_strict, json_deserializer=loads_stored, **kwargs)
        _sqlite_pragmas(engine, busy_timeout_ms=round(busy_timeout_s * 1000))
        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=dumps_strict, json_deserializer=loads_stored,
                         **kwargs)


def get_or_raise(session: Session, model: type[M], key: Any, error: Callable[[str], Exception], message: str) -> M:
    """The ``model`` row whose primary key is ``key``; ``error(message)`` is raised when there is none."""
    row = session.get(model, key)
    if row is None:
        raise error(message)
    return row


def sqlite_file(url: str | URL) -> Path | None:
    """The file a SQLite URL names; None for other databases and in-memory ones."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_private(path: Path) -> None:
    """Make the SQLite file's directory (0700) and the file (0600) if missing, whatever the umask.

    The file holds every event and the (encrypted) secrets; SQLite would create it 0644, and
    gives its -wal and -shm files the database file's mode. Existing files keep their mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(engine: Engine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, issue BEGIN (SQLAlchemy's documented pysqlite recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
        # A commit while SQLite's log is longer than its checkpoint threshold (1,000 pages by
        # default) copies the log into the database file and syncs it before it returns: during a
        # prune, 130-250 ms of a delivery claim of 20 (with readers always about, the log is not
        # rewound, so it stays that long). The dispatch tick and the prune's batches checkpoint
        # instead (see checkpoint); a commit only past this far higher mark, a safety net.
        cur.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES:d}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A transaction that only reads needs no write lock: in WAL mode it reads a snapshot
        # beside the writer instead of queueing behind every poll's write (the API's pages).
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            _begin_immediate(conn, busy_timeout_ms)


#: SQLite's automatic checkpoint threshold, in pages of 4 KiB: 1 GiB (a day's prune at 10,000,000
#: events grew the log to 0.5 GiB). The log file keeps the largest size it reached, as by default:
#: cut back after each checkpoint, the next tick's writes grew it again and a poll's writes took
#: 15-25 ms longer.
AUTOCHECKPOINT_PAGES = 262_144


def checkpoint(engine: Engine) -> None:
    """Copy SQLite's write-ahead log into the database file, as far as its readers allow
    (PASSIVE: it waits for nobody), outside any commit. Nothing to do on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None
        driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        raw.close()


def vacuum(engine: Engine, tables: Sequence[str]) -> None:
    """VACUUM ``tables`` on PostgreSQL, now; nothing to do on SQLite, whose deletes free their
    index entries at once.

    After a prune: the rows it deleted leave dead entries at the start of each index until a
    VACUUM removes them, and every read from the start steps over them (the oldest event: 1,825
    pages after a day's prune of 10,000,000 events, 4 after). Autovacuum waits for a fifth of a
    table to be dead, about six days of prunes at 30 days' retention.

    A table the role may not vacuum (it does not own it) is skipped by PostgreSQL with a warning
    to the client, not an error: it is logged here (``store.vacuum_skipped``), or it would land
    nowhere.
    """
    if engine.dialect.name != "postgresql" or not tables:
        return
    skipped: list[str] = []

    def keep(notice: Any) -> None:  # read now: a notice's fields are gone once the handler returns
        if notice.severity_nonlocalized == "WARNING":
            skipped.append(notice.message_primary)

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # not in a transaction
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.add_notice_handler(keep)
        try:
            conn.exec_driver_sql(f"VACUUM {', '.join(tables)}")
        finally:
            driver.remove_notice_handler(keep)
    for reason in skipped:
        log.warning("store.vacuum_skipped", reason=reason)


def _begin_immediate(conn: Connection, busy_timeout_ms: int) -> None:
    """``BEGIN IMMEDIATE``, tried again every 1-3 ms while another writer holds the lock, for as
    long as the busy timeout.

    SQLite's own busy handler sleeps 1, 2, 5, ... 25, 50, then 100 ms between tries: a writer that
    waits behind a series of short transactions (the prune's batches, each followed by a pause as
    long as it held the lock) wakes at the same point of each cycle and can miss every pause. At
    1,000,000 items a delivery claim waited 225 ms at the median that way during a day's prune.
    """
    raw = conn.connection.driver_connection
    assert raw is not None
    deadline = time.monotonic() + busy_timeout_ms / 1000
    try:
        raw.execute("PRAGMA busy_timeout=0")
    except sqlite3.Error:
        # An unusable connection: its error is raised through SQLAlchemy (and its disconnect handling).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as err:
                if err.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    break
            time.sleep(random.uniform(0.001, 0.003))  # noqa: S311 - spreading the waiters, not a secret
        # The last word through SQLAlchemy, so a failure is raised as every other database error is.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        # Statements inside the transaction keep the configured patience (a checkpoint, a recovery).
        # On a connection broken meanwhile, the error that broke it is the one raised.
        with contextlib.suppress(sqlite3.Error):
            raw.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")


#: Execution option of the read-only sessions (`make_sessionmaker(engine, read_only=True)`).
READ_ONLY = "poller_read_only"


def make_sessionmaker(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (we read them right after writing).

    ``read_only`` sessions must never write: on SQLite they take no write lock (a deferred
    BEGIN), and a deferred transaction that reads and then writes can fail with SQLITE_BUSY
    however long the busy timeout is.
    """
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}) if read_only else engine,
                        expire_on_commit=False)


def insert_for(bind: Engine | Connection | Session) -> Any:
    """The INSERT of ``bind``'s dialect, the one with ``on_conflict_do_nothing`` / ``_do_update``
    (both databases have them, spelled by SQLAlchemy per dialect)."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite+pysqlite:///{path}"


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create a PostgreSQL database beside ``admin_url``'s, empty or a copy of the database
    ``template`` (which must have no open connections); return its URL (tests, benchmarks)."""
    from sqlalchemy.engine import make_url

    _admin_execute(admin_url, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database at ``url``, ending its sessions (tests, benchmarks)."""
    from sqlalchemy.engine import make_url

    _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _admin_execute(admin_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE), never leaking the connection."""
    from sqlalchemy import text

    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()
