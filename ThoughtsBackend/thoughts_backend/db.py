"""The database handle, the engine-level settings, and schema creation."""

import logging

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

logger = logging.getLogger(__name__)

# PostgreSQL only: trigrams let `text ILIKE '%word%'` read an index instead of every row.
SEARCH_INDEX_NAME = "ix_thought_text_trgm"


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
    if engine.dialect.name == "postgresql":
        create_search_index(engine)


def create_search_index(engine: sa.Engine) -> bool:
    """Index the text for the search (PostgreSQL); False, with a warning, when it cannot.

    The index needs the pg_trgm extension, which only a role with the CREATE privilege on
    the database (or a superuser) may install. Without it the search still answers, only
    it reads the whole table.
    """
    with engine.connect() as connection:
        installed = connection.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'"))
        if not installed:
            try:
                connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            except sa.exc.DBAPIError as error:
                connection.rollback()
                database = engine.url.database
                logger.warning(
                    "The search has no index: the pg_trgm extension is not installed in database %s "
                    "and this user may not install it (%s). Search still works, reading the whole "
                    "table; to index it, have a superuser run CREATE EXTENSION pg_trgm; in %s "
                    "and restart the service.",
                    database,
                    str(error.orig).strip().splitlines()[0],
                    database,
                )
                return False
        connection.exec_driver_sql(
            f"CREATE INDEX IF NOT EXISTS {SEARCH_INDEX_NAME} ON thought USING gin (text gin_trgm_ops)"
        )
        connection.commit()
    return True
