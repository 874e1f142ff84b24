"""The database handle, the engine-level settings, and schema creation."""

import logging
import select
import sqlite3
import time

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from .config import SQLITE_SYNCHRONOUS_MODES


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

logger = logging.getLogger(__name__)

# PostgreSQL only: trigrams let `text ILIKE '%word%'` read an index instead of every row.
SEARCH_INDEX_NAME = "ix_thought_text_trgm"

# SQLite only: FTS5's trigram tokenizer indexes the text, so that the search reads the rows
# that hold the word's trigrams instead of every row (pg_trgm's job on PostgreSQL). It is
# external-content: it keeps the trigrams only and reads the text from thought, and triggers
# keep it in step with every write, the service's and an operator's. case_sensitive 0 folds
# case, more than LIKE does (beyond ASCII), so the index only narrows down the candidates
# and the search's LIKE decides (api_namespace.py).
SQLITE_SEARCH_INDEX = "thought_text_trigram"
SQLITE_SEARCH_TRIGGERS = (
    "thought_text_trigram_insert",
    "thought_text_trigram_delete",
    "thought_text_trigram_update",
)
SQLITE_SEARCH_SETUP = (
    """CREATE VIRTUAL TABLE IF NOT EXISTS thought_text_trigram USING fts5(
        text, content='thought', content_rowid='id', tokenize='trigram case_sensitive 0'
    )""",
    "DROP TRIGGER IF EXISTS thought_text_trigram_insert",
    """CREATE TRIGGER thought_text_trigram_insert AFTER INSERT ON thought BEGIN
        INSERT INTO thought_text_trigram (rowid, text) VALUES (new.id, new.text);
    END""",
    # An external-content index forgets a row only when told the text it indexed.
    "DROP TRIGGER IF EXISTS thought_text_trigram_delete",
    """CREATE TRIGGER thought_text_trigram_delete AFTER DELETE ON thought BEGIN
        INSERT INTO thought_text_trigram (thought_text_trigram, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    # The service never changes a text, but an operator's UPDATE must not leave the index stale.
    "DROP TRIGGER IF EXISTS thought_text_trigram_update",
    """CREATE TRIGGER thought_text_trigram_update AFTER UPDATE OF id, text ON thought BEGIN
        INSERT INTO thought_text_trigram (thought_text_trigram, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO thought_text_trigram (rowid, text) VALUES (new.id, new.text);
    END""",
    # Indexes the rows already there (a database of an earlier version), from scratch.
    "INSERT INTO thought_text_trigram (thought_text_trigram) VALUES ('rebuild')",
)
# The trigram tokenizer came with SQLite 3.34.0.
SQLITE_TRIGRAM_SINCE = (3, 34, 0)
# How long a start waits for another one that holds the write lock to set up the schema.
# The app's busy timeout (5 s) is too short for a rebuild: 0.4 s at 100 000 rows here, 50 s
# for a million rows of 110 random characters.
SQLITE_SCHEMA_WAIT_MS = 600_000

# PostgreSQL only: the number of thoughts, kept by triggers, for the X-Total-Count of the
# unfiltered list. COUNT(*) there reads a whole index: 0.1 s at a million rows. SQLite's
# COUNT(*) of a table counts b-tree pages and stays cheap, so SQLite needs none of this.
TOTAL_TABLE = "thought_total"
TOTAL_TRIGGERS = ("thought_total_insert", "thought_total_delete", "thought_total_truncate")
TOTAL_SETUP = (
    """CREATE TABLE IF NOT EXISTS thought_total (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        thoughts bigint NOT NULL
    )""",
    """CREATE OR REPLACE FUNCTION thought_total_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE thought_total SET thoughts = thoughts + (SELECT count(*) FROM changed);
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE thought_total SET thoughts = thoughts - (SELECT count(*) FROM changed);
        ELSE
            UPDATE thought_total SET thoughts = 0;
        END IF;
        RETURN NULL;
    END $$""",
    # Statement triggers with the changed rows as a table: one UPDATE per statement.
    "DROP TRIGGER IF EXISTS thought_total_insert ON thought",
    """CREATE TRIGGER thought_total_insert AFTER INSERT ON thought
        REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update()""",
    "DROP TRIGGER IF EXISTS thought_total_delete ON thought",
    """CREATE TRIGGER thought_total_delete AFTER DELETE ON thought
        REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update()""",
    "DROP TRIGGER IF EXISTS thought_total_truncate ON thought",
    """CREATE TRIGGER thought_total_truncate AFTER TRUNCATE ON thought
        FOR EACH STATEMENT EXECUTE FUNCTION thought_total_update()""",
    """INSERT INTO thought_total (thoughts) SELECT count(*) FROM thought
        ON CONFLICT (only_row) DO UPDATE SET thoughts = EXCLUDED.thoughts""",
)


def configure_sqlite(engine: sa.Engine, busy_timeout_ms: int, synchronous: str = "FULL") -> None:
    """Make SQLite safe for several uWSGI worker processes writing at once, and durable.

    WAL lets readers run beside the one writer; busy_timeout makes a writer wait for the
    lock instead of failing at once with "database is locked". synchronous FULL (the
    default, SQLITE_SYNCHRONOUS) syncs the WAL to disk at every commit, before the answer;
    NORMAL only at checkpoints: no commit is lost when a process dies, but the last ones
    may be on a power loss or a host crash.
    """
    if synchronous not in SQLITE_SYNCHRONOUS_MODES:  # it goes into a PRAGMA as text
        raise ValueError(f"synchronous must be one of {SQLITE_SYNCHRONOUS_MODES}, not {synchronous!r}")
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def set_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()


# A pooled PostgreSQL connection back in use within this many seconds is not pinged
# (HikariCP's aliveBypassWindowMs is the same idea, at 0.5 s): under load no request pays
# for a ping, and a connection that sat idle longer is checked before a request uses it.
PING_AFTER_IDLE_SECONDS = 0.5
RETURNED_AT = "thoughts_returned_at"


def configure_postgresql(engine: sa.Engine) -> None:
    """Replace a pooled PostgreSQL connection that is dead, before a request uses it,
    without a round trip to the server on every request.

    Two checks at checkout, cheapest first:
    - When PostgreSQL ends a connection (a restart, pg_terminate_backend, an idle timeout),
      it sends the client an error and closes the socket; TCP keepalive (config.py) puts a
      socket in error after 16 s of silence. Either way the socket becomes readable, while
      a healthy idle one never is: nothing is sent to a client between its queries (this
      service neither LISTENs nor changes settings). A zero-timeout poll sees it.
    - A server that vanished without a word (its host lost, its address moved to a new
      primary) leaves nothing to read. So a connection idle for more than
      PING_AFTER_IDLE_SECONDS is also pinged (`SELECT 1`), as SQLAlchemy's pool_pre_ping
      does on every checkout; busy connections skip the ping, which cost a get by id
      0.05 ms of CPU and 0.07 ms of waiting here (in-process, on loopback; a round trip
      across a network), and the server a statement.

    What neither check can catch fails its request with a 503 (Retry-After), and SQLAlchemy
    then drops the whole pool: a connection that dies in use (pool_pre_ping cannot close
    that race either), and one that vanished silently while busy (pool_pre_ping would
    have found it, 2 s later, by its ping's timeout).
    """
    if engine.dialect.name != "postgresql":
        return
    driver_error = engine.dialect.loaded_dbapi.Error

    @sa.event.listens_for(engine, "checkin")
    def note_when_returned(_dbapi_connection, record):
        if record is not None:
            record.info[RETURNED_AT] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def replace_if_dead(dbapi_connection, record, _proxy):
        returned_at = record.info.get(RETURNED_AT)
        if returned_at is None:
            # Just connected: nothing to check. (A new connection refused here would end
            # the pool's retries with an error that is not a database error: a 500.)
            return
        if dbapi_connection.closed or has_something_to_read(dbapi_connection):
            # The pool discards this connection and makes a new one; a new connection that
            # cannot be made fails the request (503).
            raise sa.exc.DisconnectionError("PostgreSQL has closed this pooled connection")
        if time.monotonic() - returned_at > PING_AFTER_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except driver_error as error:
                raise sa.exc.DisconnectionError(
                    f"a pooled connection did not answer a ping: {error}"
                ) from error


def has_something_to_read(dbapi_connection) -> bool:
    """Whether the connection's socket is readable, or in error, right now (never waits)."""
    poller = select.poll()  # not select.select(): it fails on descriptors above 1023
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


# Any fixed number: the key of the PostgreSQL advisory lock that schema set-up holds.
SCHEMA_LOCK_KEY = 0x7468_6F75  # "thou"


def create_schema(engine: sa.Engine) -> None:
    """Create the tables and indexes that are missing; safe to run on every start.

    On PostgreSQL, several instances starting at once (a new Deployment, `--scale`) take
    turns through an advisory lock: without it, two CREATE TABLEs can race and one fails.
    On SQLite they take turns through the database's write lock (create_sqlite_schema).
    """
    from . import models  # noqa: F401  (registers the tables on the metadata)

    if engine.dialect.name == "sqlite":
        create_sqlite_schema(engine)
        return
    with engine.connect() as lock_holder:
        lock_holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        try:
            Base.metadata.create_all(engine)
            create_search_index(engine)
            create_total_counter(engine)
        finally:
            lock_holder.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
            lock_holder.commit()


def create_sqlite_schema(engine: sa.Engine) -> None:
    """Create the table and its search index (SQLite), or what is missing of them.

    A database of an earlier version has the table and no index: the index is built from
    its rows, once. Everything is made in one transaction that holds the write lock from
    its start (BEGIN IMMEDIATE): another instance starting at the same time waits for it,
    then finds everything made, so nothing is built twice or seen half made.
    """
    with engine.connect() as connection:
        require_trigram_support(connection)
        # A restart with everything in place takes no write lock, so it never waits for
        # the running instances' writes nor holds them up.
        if sqlite_schema_is_complete(connection):
            return
        waited_before_ms = connection.scalar(sa.text("PRAGMA busy_timeout"))
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_SCHEMA_WAIT_MS}")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            Base.metadata.create_all(connection)
            # Another instance may have made it all while this one waited for the lock.
            if not sqlite_schema_is_complete(connection):
                for statement in SQLITE_SEARCH_SETUP:
                    connection.exec_driver_sql(statement)
            connection.commit()
        finally:
            connection.rollback()  # after a failure; nothing to undo after the commit
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(waited_before_ms)}")


def sqlite_schema_is_complete(connection: sa.Connection) -> bool:
    names = set(
        connection.scalars(sa.text("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')"))
    )
    return {"thought", SQLITE_SEARCH_INDEX, *SQLITE_SEARCH_TRIGGERS} <= names


def require_trigram_support(connection: sa.Connection) -> None:
    """Stop the start, in one sentence, when this SQLite cannot keep the search index.

    Not a fallback to reading the whole table: once a database has the index, its triggers
    make every write to thought go through FTS5, so a process without FTS5 could not write
    there at all. Failing at the start says so before any request does.
    """
    version, has_fts5 = connection.execute(
        sa.text("SELECT sqlite_version(), sqlite_compileoption_used('ENABLE_FTS5')")
    ).one()
    if has_fts5 and tuple(int(part) for part in version.split(".")) >= SQLITE_TRIGRAM_SINCE:
        return
    needed = ".".join(str(part) for part in SQLITE_TRIGRAM_SINCE)
    problem = (
        f"this SQLite ({version}, {'with' if has_fts5 else 'without'} FTS5) cannot index the search: "
        f"it needs FTS5 and its trigram tokenizer, in SQLite {needed} or later built with FTS5"
    )
    # An OperationalError, as for a database that cannot be used: init_db.py reports its
    # sentence and the start stops.
    raise sa.exc.OperationalError(
        "-- the search index needs FTS5 trigram", None, sqlite3.OperationalError(problem)
    )


def create_total_counter(engine: sa.Engine) -> None:
    """Keep the number of thoughts in thought_total (PostgreSQL), counted once when set up.

    Set up when a piece is missing: on a new database, or after the thought table was
    dropped (its triggers go with it). The table is locked against writes meanwhile, so
    that the first count and the triggers that take over from it agree.
    """
    with engine.connect() as connection:
        triggers = connection.scalar(
            sa.text(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'thought'::regclass AND tgname = ANY(:names)"
            ),
            {"names": list(TOTAL_TRIGGERS)},
        )
        has_total = connection.scalar(
            sa.text("SELECT to_regclass(:table) IS NOT NULL"), {"table": TOTAL_TABLE}
        )
        if has_total:
            has_total = connection.scalar(sa.text("SELECT count(*) FROM thought_total")) == 1
        if triggers == len(TOTAL_TRIGGERS) and has_total:
            return
        connection.rollback()
        with connection.begin():
            connection.exec_driver_sql("LOCK TABLE thought IN SHARE ROW EXCLUSIVE MODE")
            for statement in TOTAL_SETUP:
                connection.exec_driver_sql(statement)


def create_search_index(engine: sa.Engine) -> bool:
    """Index the text for the search (PostgreSQL); False, with a warning, when it cannot.

    The index needs the pg_trgm extension, which only a role with the CREATE privilege on
    the database (or a superuser) may install. Without it the search still answers, only
    it reads the whole table.
    """
    with engine.connect() as connection:
        # CREATE INDEX IF NOT EXISTS still takes a lock that waits for open writes: skip it
        # when the index is there, so that a restart never holds up the running instances.
        if connection.scalar(sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": SEARCH_INDEX_NAME}):
            return True
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
