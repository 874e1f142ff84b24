"""The database handle, the engine-level settings, and schema creation."""

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def configure_sqlite(engine: sa.Engine, busy_timeout_ms: int) -> None:
    """Make SQLite safe for several uWSGI worker processes writing at once.

    WAL lets readers run beside the one writer; busy_timeout makes a writer wait for the
    lock instead of failing at once with "database is locked".
    """
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def set_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL loses nothing when a process dies, only on power loss.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()


def create_schema(engine: sa.Engine) -> None:
    """Create the tables and indexes that are missing; safe to run on every start."""
    from . import models  # noqa: F401  (registers the tables on the metadata)

    Base.metadata.create_all(engine)
