"""Apply Alembic migrations from code: on daemon start, in tests, and from `poller migrate`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

#: Where the migration scripts live, inside the installed package.
MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision``. Safe to run concurrently with a running daemon.

    On SQLite, foreign keys are off while migrating (SQLite's own procedure for rebuilding a
    table): a batch rebuild drops the old table, and with them on, that drop would cascade into
    the rows that reference it. They are checked before the transaction commits.
    """
    cfg = alembic_config()
    if revision == "head" and pending(engine) is None:
        # Nothing to do: and on SQLite the foreign-key check below reads every row of every table
        # (28 s at 10,000,000 events), which no daemon start should pay for a schema already current.
        return
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # Must run outside a transaction, where the pragma takes effect (a no-op inside one).
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows without their parent: {broken[:5]}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def pending(engine: Engine) -> str | None:
    """None when the database is at the latest schema, else what is wrong, in one sentence."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return None
    if current is None:
        return "the database has no poller schema yet"
    return f"the database schema is at revision {current}, this poller needs {head}"
