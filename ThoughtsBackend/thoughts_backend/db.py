"""The database handle and the engine-level settings. The schema is made by the migrations
(migrations/, run by thoughts_backend.schema)."""

import select
import time

import sqlalchemy as sa
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def init_app(app: Flask) -> None:
    """The app's database: Flask-SQLAlchemy's session per app context, then the engine's
    settings from the configuration (config.py checked them)."""
    db.init_app(app)
    # Teardown functions run newest first: registered after Flask-SQLAlchemy's own, this one
    # closes the session first, and Flask-SQLAlchemy's then finds nothing left to close.
    app.teardown_appcontext(end_database_session)
    config = app.config
    with app.app_context():
        engine = db.engine
    configure_sqlite(engine, config["SQLITE_BUSY_TIMEOUT_MS"], config["SQLITE_SYNCHRONOUS"])
    configure_postgresql(engine)
    if engine.dialect.name == "postgresql":
        # Here, not at the top: psycopg's import is a tenth of a start on SQLite, which
        # never uses it (SQLAlchemy loads a database's driver only for its URL, too).
        from .postgresql_timeouts import configure_postgresql_timeouts

        configure_postgresql_timeouts(
            engine, config["POSTGRES_STATEMENT_TIMEOUT_MS"], config["POSTGRES_TRANSACTION_POOLER"]
        )


def end_database_session(_error: BaseException | None) -> None:
    """Close the request's session, tolerating a database that died since the view ran.

    Closing rolls back the open transaction. If the database went away meanwhile, that
    rollback fails, and the answer, already decided and handed to the server, would be cut
    off after its headers. Instead the connection is dropped (the server rolls back an
    orphaned transaction itself) and the answer goes out whole.
    """
    try:
        db.session.remove()
    except SQLAlchemyError as error:
        current_app.logger.warning("database session closed with an error: %s", error)
        db.session().invalidate()
        db.session.remove()


def configure_sqlite(engine: sa.Engine, busy_timeout_ms: int, synchronous: str = "FULL") -> None:
    """Make SQLite safe for several uWSGI worker processes writing at once, and durable.

    WAL lets readers run beside the one writer; busy_timeout makes a writer wait for the
    lock instead of failing at once with "database is locked". synchronous FULL (the
    default, SQLITE_SYNCHRONOUS) syncs the WAL to disk at every commit, before the answer;
    NORMAL only at checkpoints: no commit is lost when a process dies, but the last ones
    may be on a power loss or a host crash.
    """
    # The mode goes into a PRAGMA as text: one word, nothing else. Which words a deployment
    # may choose, config.py decides (SQLITE_SYNCHRONOUS_MODES); init_db.py takes the default.
    if not synchronous.isalpha():
        raise ValueError(f"synchronous must be one word, a mode such as FULL, not {synchronous!r}")
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
